//! Uploads: a multipart body in kubo's layout, read part by part by an async task and handed to the
//! command's blocking thread as a `TreeSource` whose files are `Read`ers.
//!
//! Topology: the pump task owns the multipart stream. For each part it sends one entry through a channel
//! of depth one; a file entry carries the receiving end of its own bounded channel of chunks, which the
//! pump then fills, in batches of the body's own pieces (no copy), while the command reads it. Nothing
//! is buffered beyond a few batches, so an upload of any size costs the same memory. The end of the body is an explicit message: a channel that closes
//! without it (the pump died) reads as an error, never as a shorter upload.
//!
//! kubo's layout (boxo `files`): every part is an entry named by its `Content-Disposition` filename,
//! URL-query-escaped, relative to the upload's root; `Content-Type: application/x-directory` marks a
//! directory, `application/symlink` a symlink whose body is the target, anything else a file.
//!
//! When the command stops reading early (it failed), the pump keeps reading and discarding the request,
//! so the client can finish sending and then read the error.

use std::io::{self, Read};

use axum::extract::multipart::Field;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ApiError;
use crate::add::{TreeEntry, TreeEntryKind, TreeSource};

/// Batches of one part's chunks in flight between the pump and the command.
const PART_DEPTH: usize = 4;
/// Bytes gathered into one batch: the body arrives in pieces of ~10 KB, and handing each across threads
/// on its own cost more than the hashing (one 256 KiB chunk is what the importer reads at a time).
const BATCH_BYTES: usize = 256 * 1024;
/// The longest symlink target accepted (Linux's `PATH_MAX`).
const MAX_SYMLINK: usize = 4096;

enum Msg {
    Entry(TreeEntry),
    End,
    Failed(io::Error),
}

/// The command's end of an upload.
pub(crate) struct Upload {
    rx: mpsc::Receiver<Msg>,
}

impl TreeSource for Upload {
    fn next_entry(&mut self) -> io::Result<Option<TreeEntry>> {
        match self.rx.blocking_recv() {
            Some(Msg::Entry(e)) => Ok(Some(e)),
            Some(Msg::End) => Ok(None),
            Some(Msg::Failed(e)) => Err(e),
            None => Err(io::Error::other("the upload stopped before its end")),
        }
    }
}

impl Upload {
    /// The next file of the upload, skipping directories and symlinks (block and CAR uploads are flat).
    pub(crate) fn next_file(&mut self) -> io::Result<Option<(String, Box<dyn Read + Send>)>> {
        while let Some(entry) = self.next_entry()? {
            if let TreeEntryKind::File(reader) = entry.kind {
                return Ok(Some((entry.path, reader)));
            }
        }
        Ok(None)
    }
}

/// Starts reading the multipart body of `req`. A request without one is refused as kubo refuses a
/// command whose file argument is missing.
pub(crate) async fn start(req: Request, file_arg: &str) -> Result<(Upload, JoinHandle<()>), ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/"));
    if !is_multipart {
        return Err(ApiError::bad_request(format!("file argument '{file_arg}' is required")));
    }
    let multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())))?;
    let (tx, rx) = mpsc::channel(1);
    let pump = tokio::spawn(pump(multipart, tx));
    Ok((Upload { rx }, pump))
}

async fn pump(mut multipart: Multipart, tx: mpsc::Sender<Msg>) {
    let mut consumer_gone = false;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => {
                let _ = tx.send(Msg::End).await;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "upload: bad multipart body");
                let _ = tx.send(Msg::Failed(io::Error::new(io::ErrorKind::InvalidData, e.body_text()))).await;
                return;
            }
        };
        if consumer_gone {
            drain(field).await;
            continue;
        }
        match forward(field, &tx).await {
            Forwarded::Ok => {}
            Forwarded::ConsumerGone => consumer_gone = true,
            Forwarded::ReadFailed => return,
        }
    }
}

enum Forwarded {
    Ok,
    /// The command stopped reading; this part was drained.
    ConsumerGone,
    /// The request body broke off; the command was told.
    ReadFailed,
}

/// Hands one part to the command; if the command is gone, reads the rest of the part and drops it.
async fn forward(mut field: Field<'_>, tx: &mpsc::Sender<Msg>) -> Forwarded {
    let raw = field.file_name().unwrap_or("").to_string();
    let path = query_unescape(&raw).unwrap_or(raw);
    let media = field.content_type().map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let kind = match media.as_deref() {
        Some("application/x-directory" | "multipart/form-data" | "multipart/mixed") => TreeEntryKind::Directory,
        Some("application/symlink") => {
            let mut target = Vec::new();
            loop {
                match field.chunk().await {
                    Ok(Some(c)) if target.len() + c.len() <= MAX_SYMLINK => target.extend_from_slice(&c),
                    Ok(Some(_)) => {
                        let e = io::Error::new(io::ErrorKind::InvalidData, format!("symlink {path:?} is too long"));
                        let _ = tx.send(Msg::Failed(e)).await;
                        // The command fails on this error and stops reading.
                        drain(field).await;
                        return Forwarded::ConsumerGone;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Msg::Failed(io::Error::other(e.body_text()))).await;
                        return Forwarded::ReadFailed;
                    }
                }
            }
            match String::from_utf8(target) {
                Ok(t) => TreeEntryKind::Symlink(t),
                Err(_) => {
                    let e = io::Error::new(io::ErrorKind::InvalidData, format!("symlink {path:?} is not UTF-8"));
                    let _ = tx.send(Msg::Failed(e)).await;
                    return Forwarded::ConsumerGone;
                }
            }
        }
        _ => {
            let (chunks_tx, chunks_rx) = mpsc::channel(PART_DEPTH);
            let reader = PartReader { rx: chunks_rx, batch: Vec::new().into_iter(), current: Bytes::new() };
            if tx.send(Msg::Entry(TreeEntry { path, kind: TreeEntryKind::File(Box::new(reader)) })).await.is_err() {
                drain(field).await;
                return Forwarded::ConsumerGone;
            }
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            loop {
                match field.chunk().await {
                    Ok(Some(c)) => {
                        batch_bytes += c.len();
                        batch.push(c);
                        if batch_bytes >= BATCH_BYTES {
                            batch_bytes = 0;
                            if chunks_tx.send(Ok(std::mem::take(&mut batch))).await.is_err() {
                                drain(field).await;
                                return Forwarded::ConsumerGone;
                            }
                        }
                    }
                    Ok(None) => {
                        if !batch.is_empty() && chunks_tx.send(Ok(batch)).await.is_err() {
                            return Forwarded::ConsumerGone;
                        }
                        // Dropping the sender is the file's end.
                        return Forwarded::Ok;
                    }
                    Err(e) => {
                        let _ = chunks_tx.send(Err(io::Error::new(io::ErrorKind::InvalidData, e.body_text()))).await;
                        return Forwarded::ReadFailed;
                    }
                }
            }
        }
    };
    if tx.send(Msg::Entry(TreeEntry { path, kind })).await.is_err() {
        return Forwarded::ConsumerGone;
    }
    Forwarded::Ok
}

async fn drain(mut field: Field<'_>) {
    while let Ok(Some(_)) = field.chunk().await {}
}

/// Reads one part's chunks as they arrive.
struct PartReader {
    rx: mpsc::Receiver<io::Result<Vec<Bytes>>>,
    batch: std::vec::IntoIter<Bytes>,
    current: Bytes,
}

impl Read for PartReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if let Some(next) = self.batch.next() {
                self.current = next;
                continue;
            }
            match self.rx.blocking_recv() {
                Some(Ok(batch)) => self.batch = batch.into_iter(),
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Go's `url.QueryUnescape`, which kubo applies to part file names; `None` if the name is not escaped
/// validly (kubo then uses it as it is).
fn query_unescape(s: &str) -> Option<String> {
    urlencoding::decode(&s.replace('+', " ")).ok().map(|c| c.into_owned())
}
