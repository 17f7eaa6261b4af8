//! `?format=tar`: a UnixFS file or directory tree as a tar stream.
//!
//! Entry names come from the DAG and may be hostile (`../x`, names with slashes). Before any byte is sent,
//! the whole tree of names is planned: directories are read, names joined and cleaned, and a name that
//! leaves the root refuses the request with 400; file roots are read for their sizes, which tar headers
//! need up front. Then the plan streams: each header, then the file's bytes through the same reader as a
//! plain file response.

use btfs_chunker::Cid;
use btfs_chunker::tar::{END, EntryKind, entry_header, padding};
use btfs_chunker::walk::UnixfsNode;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::content::{Blocks, CHANNEL, ContentError, decode, dir_entries, file_size, stream_file};
use crate::source::ContentSource;

/// Entries one tar response may hold; a larger tree is refused before the response starts.
pub(crate) const MAX_ENTRIES: usize = 100_000;
/// Directory nesting a tar response follows.
const MAX_TREE_DEPTH: usize = 256;

/// Why a tree cannot be sent as tar.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TarError {
    #[error("entry {name:?} under {parent} would be written outside the archive's root")]
    Escapes { parent: Cid, name: String },
    #[error("the tree has more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error(transparent)]
    Content(#[from] ContentError),
}

/// One planned entry.
pub(crate) struct Planned {
    path: String,
    kind: Kind,
}

enum Kind {
    Directory,
    Symlink(String),
    File { cid: Cid, block: Bytes, size: u64 },
}

/// The cleaned path of the entry `name` in the directory at `parent` (a cleaned path whose first segment is
/// the archive's root), resolving `.` and `..`; `None` when it would not lie strictly inside the root.
fn entry_path(parent: &[String], name: &str) -> Option<Vec<String>> {
    let mut out = parent.to_vec();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p.to_string()),
        }
    }
    (out.len() > 1 && out[0] == parent[0]).then_some(out)
}

/// Plans the archive for the node `cid` (its block already read), named `root_name` in the archive.
pub(crate) async fn plan<S: ContentSource>(
    blocks: &Blocks<S>,
    root_name: &str,
    cid: Cid,
    block: Bytes,
) -> Result<Vec<Planned>, TarError> {
    let mut plan = Vec::new();
    // Depth-first, in directory order: (cleaned path, CID, block, depth).
    let mut stack = vec![(vec![root_name.to_string()], cid, block, 0usize)];
    while let Some((path, cid, block, depth)) = stack.pop() {
        if plan.len() >= MAX_ENTRIES {
            return Err(TarError::TooMany);
        }
        let node = decode(&cid, &block)?;
        let joined = path.join("/");
        match node {
            UnixfsNode::File { .. } => {
                let size = file_size(&cid, &node)?;
                plan.push(Planned { path: joined, kind: Kind::File { cid, block, size } });
            }
            UnixfsNode::Symlink { target } => {
                let target = String::from_utf8_lossy(&target).into_owned();
                plan.push(Planned { path: joined, kind: Kind::Symlink(target) });
            }
            UnixfsNode::Directory { .. } | UnixfsNode::HamtShard { .. } => {
                if depth >= MAX_TREE_DEPTH {
                    return Err(ContentError::TooDeep { cid }.into());
                }
                plan.push(Planned { path: joined, kind: Kind::Directory });
                let entries = dir_entries(blocks, cid, node).await?;
                let mut children = Vec::with_capacity(entries.len());
                for entry in entries {
                    let child_path = entry_path(&path, &entry.name)
                        .ok_or_else(|| TarError::Escapes { parent: cid, name: entry.name.clone() })?;
                    let data = blocks.get(&entry.cid).await?;
                    children.push((child_path, entry.cid, data, depth + 1));
                }
                stack.extend(children.into_iter().rev());
            }
        }
    }
    Ok(plan)
}

/// Streams a planned archive.
pub(crate) fn stream<S: ContentSource>(
    blocks: Blocks<S>,
    plan: Vec<Planned>,
) -> mpsc::Receiver<Result<Bytes, ContentError>> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        for entry in plan {
            let (kind, size, link) = match &entry.kind {
                Kind::Directory => (EntryKind::Directory, 0, ""),
                Kind::Symlink(target) => (EntryKind::Symlink, 0, target.as_str()),
                Kind::File { size, .. } => (EntryKind::File, *size, ""),
            };
            let header = entry_header(&entry.path, kind, size, link, 0);
            if tx.send(Ok(Bytes::from(header))).await.is_err() {
                return;
            }
            if let Kind::File { cid, block, size } = entry.kind {
                let mut body = stream_file(blocks.clone(), cid, block, 0, size);
                while let Some(item) = body.recv().await {
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
                let pad = padding(size);
                if pad > 0 && tx.send(Ok(Bytes::from(vec![0; pad]))).await.is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Ok(Bytes::from_static(&END))).await;
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_cleaned_and_kept_inside() {
        let root = segs(&["R"]);
        assert_eq!(entry_path(&root, "a"), Some(segs(&["R", "a"])));
        let dir = segs(&["R", "foobar", "directory"]);
        assert_eq!(entry_path(&dir, "../file"), Some(segs(&["R", "foobar", "file"])));
        assert_eq!(entry_path(&root, "../foo"), None);
        assert_eq!(entry_path(&root, "../../foo"), None);
        assert_eq!(entry_path(&root, ".."), None);
        assert_eq!(entry_path(&root, "."), None);
        assert_eq!(entry_path(&root, "a/../.."), None);
    }
}
