//! Length-prefixed framing of Bitswap messages on a libp2p stream: an unsigned varint length, then the
//! protobuf body. Reads are capped at `MAX_INBOUND_MESSAGE` and draw their buffer from a shared memory budget, so
//! many slow or hostile streams cannot make the node allocate without bound.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::Stream;
use tokio::sync::Semaphore;

use super::message::MAX_INBOUND_MESSAGE;
use btfs_chunker::varint;

/// How long the rest of a message may take once its first byte has arrived.
pub const MESSAGE_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Memory all inbound message buffers together may hold, in KiB units of the semaphore.
pub const INBOUND_BUDGET_KIB: usize = 128 * 1024;

/// Reads one message body. `Ok(None)` on a clean end of stream before a new message.
pub async fn read_message(stream: &mut Stream, budget: &Arc<Semaphore>) -> io::Result<Option<Vec<u8>>> {
    let mut first = [0u8; 1];
    if stream.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let body = tokio::time::timeout(MESSAGE_READ_TIMEOUT, async {
        let mut prefix = vec![first[0]];
        while prefix.last().is_some_and(|b| b & 0x80 != 0) {
            if prefix.len() >= 10 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "length prefix is not a varint"));
            }
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await?;
            prefix.push(b[0]);
        }
        let (len, _) =
            varint::decode(&prefix).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad length prefix"))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_INBOUND_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message of {len} bytes is over the {MAX_INBOUND_MESSAGE}-byte limit"),
            ));
        }
        let kib = u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let _permit = budget.acquire_many(kib).await.map_err(|_| io::Error::other("shutting down"))?;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok(body)
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer stalled in the middle of a message"))??;
    Ok(Some(body))
}

/// Writes one message body, given in consecutive parts, with its length prefix.
pub async fn write_message(stream: &mut Stream, parts: &[&[u8]]) -> io::Result<()> {
    let mut prefix = Vec::with_capacity(10);
    varint::encode(parts.iter().map(|p| p.len() as u64).sum(), &mut prefix);
    stream.write_all(&prefix).await?;
    for part in parts {
        stream.write_all(part).await?;
    }
    stream.flush().await
}
