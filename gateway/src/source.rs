//! Where the gateway's blocks come from: a trait the node implements over its store and the network, and an
//! in-memory source for tests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use btfs_chunker::Cid;
use btfs_chunker::hash::Multihash;
use bytes::Bytes;

/// How far a read may go to find a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// The local store, then the network if the source has one.
    Network,
    /// The local store only (`Cache-Control: only-if-cached`).
    LocalOnly,
}

/// Where a block was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Network,
}

/// Why a source did not produce a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Not stored here, and (for [`Fetch::Network`]) the source has no network to ask.
    #[error("block {0} is not available")]
    NotFound(Cid),
    /// The network did not produce the block within the source's time limit.
    #[error("block {0} was not retrieved in time")]
    Timeout(Cid),
    /// The block is larger than the source will hand out.
    #[error("block {cid} is {size} bytes, over the limit")]
    TooLarge { cid: Cid, size: usize },
    /// Anything else (a failing disk, a closed store). The text is logged, never sent to clients.
    #[error("reading block {cid} failed: {reason}")]
    Failed { cid: Cid, reason: String },
}

/// A read-only source of verified blocks, keyed by CID.
///
/// Implementations hand out only bytes that hash to the CID's multihash (the node's store hashes every
/// block before storing it). Calls may run concurrently.
pub trait ContentSource: Send + Sync + 'static {
    fn get(&self, cid: &Cid, fetch: Fetch) -> impl Future<Output = Result<(Bytes, Origin), SourceError>> + Send;

    /// Several blocks at once, answered in order: file readers ask for the next few children together, so
    /// a source with a cost per call (a thread hop, a syscall) pays it once. By default, one `get` each, run
    /// concurrently.
    fn get_many(
        &self,
        cids: &[Cid],
        fetch: Fetch,
    ) -> impl Future<Output = Vec<Result<(Bytes, Origin), SourceError>>> + Send {
        futures::future::join_all(cids.iter().map(move |cid| self.get(cid, fetch)))
    }
}

impl<S: ContentSource> ContentSource for Arc<S> {
    fn get(&self, cid: &Cid, fetch: Fetch) -> impl Future<Output = Result<(Bytes, Origin), SourceError>> + Send {
        (**self).get(cid, fetch)
    }

    fn get_many(
        &self,
        cids: &[Cid],
        fetch: Fetch,
    ) -> impl Future<Output = Vec<Result<(Bytes, Origin), SourceError>>> + Send {
        (**self).get_many(cids, fetch)
    }
}

/// Blocks held in memory, keyed by multihash like the node's store: the double for unit tests.
#[derive(Debug, Default, Clone)]
pub struct MemorySource {
    blocks: HashMap<Multihash, Bytes>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a block after checking that it hashes to `cid`.
    pub fn insert(&mut self, cid: &Cid, data: impl Into<Bytes>) -> Result<(), btfs_chunker::hash::VerifyError> {
        let data = data.into();
        btfs_chunker::hash::verify(cid, &data)?;
        self.blocks.insert(*cid.hash(), data);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

impl ContentSource for MemorySource {
    async fn get(&self, cid: &Cid, _fetch: Fetch) -> Result<(Bytes, Origin), SourceError> {
        if cid.hash().code() == btfs_chunker::hash::IDENTITY {
            return Ok((Bytes::copy_from_slice(cid.hash().digest()), Origin::Local));
        }
        self.blocks.get(cid.hash()).map(|b| (b.clone(), Origin::Local)).ok_or(SourceError::NotFound(*cid))
    }
}
