//! Where a command runs: on the repo, opened by this process (`Local`), or in the daemon that holds it,
//! through its RPC API (`Remote`). Both answer with the same types, so `cli` prints the same text either
//! way; failures come back with the same messages (the daemon sends the message of the same error).

use std::io::{BufReader, Read, Write};
use std::path::Path;

use anyhow::Result;
use btfs_chunker::Cid;
use serde_json::Value;

use crate::add::{AddEvents, AddInput, AddOptions, Added};
use crate::api::{ConfigValueKind, IdInfo, Node, RepoSummary, codec_from_name, config_value};
use crate::blocks::{PinFilter, corrupt_message};
use crate::client::Client;
use crate::read::LsEntry;

/// A node to run commands on.
pub(crate) enum Backend {
    /// Boxed: a `Node` is large and there is one per process.
    Local(Box<Node>),
    Remote(Client),
}

impl Backend {
    /// The daemon's API if `$BTFS_PATH/api` names one that answers, else the repo itself.
    pub(crate) fn open(repo: &Path) -> Result<Self> {
        if let Some(client) = Client::discover(repo)? {
            tracing::debug!("using the running daemon's API");
            return Ok(Self::Remote(client));
        }
        Ok(Self::Local(Box::new(Node::open(repo)?)))
    }

    pub(crate) fn add(
        &self,
        inputs: Vec<AddInput>,
        opts: &AddOptions,
        events: &mut dyn AddEvents,
    ) -> Result<Vec<Added>> {
        Ok(match self {
            Self::Local(n) => n.add(inputs, opts, events)?,
            Self::Remote(c) => c.add(inputs, opts, events)?,
        })
    }

    pub(crate) fn cat(&self, path: &str, offset: u64, length: Option<u64>, out: &mut dyn Write) -> Result<()> {
        match self {
            Self::Local(n) => drop(n.cat(path, offset, length, out)?),
            Self::Remote(c) => c.cat(path, offset, length, out)?,
        }
        Ok(())
    }

    /// `get` to `dest`; `on_total` hears the content size when it is known, `progress` every byte written.
    pub(crate) fn get(&self, path: &str, dest: &Path, on_total: &dyn Fn(u64), progress: &dyn Fn(u64)) -> Result<()> {
        match self {
            Self::Local(n) => {
                if let Ok(size) = n.file_size(path) {
                    on_total(size);
                }
                n.get(path, dest, progress)?;
            }
            Self::Remote(c) => c.get(path, dest, on_total, progress)?,
        }
        Ok(())
    }

    pub(crate) fn ls(&self, path: &str) -> Result<Vec<LsEntry>> {
        Ok(match self {
            Self::Local(n) => n.ls(path)?.1,
            Self::Remote(c) => c.ls(path)?,
        })
    }

    /// Pins `path`; returns the CID it named.
    pub(crate) fn pin_add(&self, path: &str, recursive: bool) -> Result<Cid> {
        Ok(match self {
            Self::Local(n) => {
                let cid = n.resolve(path)?;
                n.pin_add(&cid, recursive)?;
                cid
            }
            Self::Remote(c) => c.pin_add(path, recursive)?,
        })
    }

    pub(crate) fn pin_rm(&self, path: &str) -> Result<Cid> {
        Ok(match self {
            Self::Local(n) => {
                let cid = n.resolve(path)?;
                n.pin_rm(&cid)?;
                cid
            }
            Self::Remote(c) => c.pin_rm(path)?,
        })
    }

    pub(crate) fn pin_ls(&self, filter: PinFilter) -> Result<Vec<(Cid, String)>> {
        Ok(match self {
            Self::Local(n) => n.pin_ls(filter)?.into_iter().map(|(c, k)| (c, k.to_string())).collect(),
            Self::Remote(c) => c.pin_ls(filter)?,
        })
    }

    pub(crate) fn block_get(&self, cid: &Cid, out: &mut dyn Write) -> Result<()> {
        match self {
            Self::Local(n) => out.write_all(&n.block_get(cid)?)?,
            Self::Remote(c) => c.block_get(cid, out)?,
        }
        Ok(())
    }

    pub(crate) fn block_put(&self, data: Vec<u8>, codec: &str, mhtype: &str, pin: bool) -> Result<Cid> {
        Ok(match self {
            Self::Local(n) => {
                let (codec, hash) = (codec_from_name(codec)?, mhtype.parse()?);
                if pin { n.block_put_pinned(data, codec, hash, false)? } else { n.block_put(data, codec, hash, false)? }
            }
            Self::Remote(c) => c.block_put(&data, codec, mhtype, pin)?,
        })
    }

    pub(crate) fn block_size(&self, cid: &Cid) -> Result<u64> {
        Ok(match self {
            Self::Local(n) => n.block_get(cid)?.len() as u64,
            Self::Remote(c) => c.block_stat(cid)?,
        })
    }

    pub(crate) fn block_rm(&self, cid: &Cid) -> Result<()> {
        match self {
            Self::Local(n) => n.block_rm(cid)?,
            Self::Remote(c) => c.block_rm(cid)?,
        }
        Ok(())
    }

    /// Imports one CAR; returns its roots.
    pub(crate) fn dag_import(&self, car: Box<dyn Read + Send>, pin_roots: bool) -> Result<Vec<Cid>> {
        Ok(match self {
            Self::Local(n) => n.dag_import(BufReader::with_capacity(1 << 20, car), pin_roots)?.roots,
            Self::Remote(c) => c.dag_import(car, pin_roots)?,
        })
    }

    pub(crate) fn dag_export(&self, cid: &Cid, out: &mut dyn Write) -> Result<()> {
        match self {
            Self::Local(n) => drop(n.dag_export(cid, out)?),
            Self::Remote(c) => c.dag_export(cid, out)?,
        }
        Ok(())
    }

    pub(crate) fn repo_summary(&self) -> Result<RepoSummary> {
        Ok(match self {
            Self::Local(n) => n.repo_summary()?,
            Self::Remote(c) => c.repo_summary()?,
        })
    }

    /// Verifies every block; `on_corrupt` gets kubo's message for each corrupt one. Returns how many.
    pub(crate) fn repo_verify(&self, on_corrupt: &mut dyn FnMut(&str) -> std::io::Result<()>) -> Result<u64> {
        match self {
            Self::Local(n) => {
                let (_, bad) = n.repo_verify()?;
                for mh in &bad {
                    on_corrupt(&corrupt_message(mh))?;
                }
                Ok(bad.len() as u64)
            }
            Self::Remote(c) => {
                Ok(c.repo_verify(&mut |msg| on_corrupt(msg).map_err(crate::client::ClientError::Output))?)
            }
        }
    }

    pub(crate) fn repo_gc(&self) -> Result<Vec<Cid>> {
        Ok(match self {
            Self::Local(n) => n.repo_gc()?,
            Self::Remote(c) => c.repo_gc()?,
        })
    }

    pub(crate) fn config_get(&self, key: &str) -> Result<Value> {
        Ok(match self {
            Self::Local(n) => n.config_get(key)?,
            Self::Remote(c) => c.config_get(key)?,
        })
    }

    pub(crate) fn config_set(&self, key: &str, raw: &str, kind: ConfigValueKind) -> Result<()> {
        match self {
            Self::Local(n) => n.config_set(key, config_value(key, raw, kind)?)?,
            Self::Remote(c) => c.config_set(key, raw, kind)?,
        }
        Ok(())
    }

    pub(crate) fn config_show(&self) -> Result<Value> {
        Ok(match self {
            Self::Local(n) => n.config_show(),
            Self::Remote(c) => c.config_show()?,
        })
    }

    pub(crate) fn id(&self) -> Result<IdInfo> {
        Ok(match self {
            Self::Local(n) => n.id(),
            Self::Remote(c) => c.id()?,
        })
    }
}
