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

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::multipart::Field;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request};
use axum::handler::Handler;
use axum::http::header;
use axum::routing::{MethodRouter, post};
use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ApiError, RpcContext};
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

/// The route of a command that takes an upload: POST, without axum's default 2 MiB body limit (an upload
/// streams through `start`, part by part, so its size costs no memory). A route that calls `start` must
/// be made with this, or axum cuts the upload off at 2 MiB.
pub(crate) fn route<H, T>(handler: H) -> MethodRouter<RpcContext>
where
    H: Handler<T, RpcContext>,
    T: 'static,
{
    post(handler).layer(DefaultBodyLimit::disable())
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
    let req = req.map(|body| Body::from_stream(OnePieceAtATime { inner: body.into_data_stream(), paused: false }));
    let multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())))?;
    let (tx, rx) = mpsc::channel(1);
    let pump = tokio::spawn(tracing::Instrument::in_current_span(pump(multipart, tx)));
    Ok((Upload { rx }, pump))
}

/// Hands multer one piece of the body per poll. multer 3.1 takes everything that is ready in one go, and
/// while it looks for the first boundary it reads an end of stream that came in the same go as the data
/// as a truncated body ("incomplete multipart stream"), which a small upload arriving just after a first
/// `Pending` would hit. A pause after each piece keeps the end in a poll of its own, and multer's buffer
/// to about one piece.
struct OnePieceAtATime<S> {
    inner: S,
    paused: bool,
}

impl<S: Stream + Unpin> Stream for OnePieceAtATime<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.paused {
            self.paused = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(_)) = item {
            self.paused = true;
        }
        item
    }
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

/// Hands one part to the command. A part the command stops reading is read to its end and dropped.
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
                                // The command dropped this part's reader: it wants no more of this part
                                // (a CAR reader that is done), but maybe the next parts. If the command is
                                // gone, sending the next entry says so.
                                drain(field).await;
                                return Forwarded::Ok;
                            }
                        }
                    }
                    Ok(None) => {
                        // A dropped reader wants no more of this part, as above; dropping the sender is
                        // the part's end.
                        if !batch.is_empty() {
                            let _ = chunks_tx.send(Ok(batch)).await;
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(parts: &[(&str, &[u8])]) -> axum::http::Request<Body> {
        let mut body = Vec::new();
        for (name, data) in parts {
            body.extend_from_slice(
                format!(
                    "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--B--\r\n");
        // In pieces with a pause between them, as a socket delivers it (multer takes all that is ready at
        // once), so a large part spans many batches.
        let pieces: Vec<Result<Bytes, io::Error>> = body.chunks(8192).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let pieces = futures::StreamExt::then(futures::stream::iter(pieces), |p| async {
            tokio::task::yield_now().await;
            p
        });
        axum::http::Request::builder()
            .method("POST")
            .uri("/")
            .header("content-type", "multipart/form-data; boundary=B")
            .body(Body::from_stream(pieces))
            .expect("request")
    }

    /// Sends `req` to a route made by `route` whose command reads up to 16 bytes of each file part and
    /// answers `name=<bytes read>` lines.
    async fn heads(req: axum::http::Request<Body>) -> String {
        use tower::ServiceExt;
        async fn command(req: Request) -> Result<String, ApiError> {
            let (mut upload, pump) = start(req, "path").await?;
            let lines = tokio::task::spawn_blocking(move || {
                let mut lines = String::new();
                while let Some((name, mut reader)) = upload.next_file()? {
                    let mut head = [0u8; 16];
                    let n = reader.read(&mut head)?;
                    lines.push_str(&format!("{name}={}\n", String::from_utf8_lossy(&head[..n])));
                }
                Ok::<_, io::Error>(lines)
            })
            .await
            .map_err(|_| ApiError::Internal)??;
            pump.await.map_err(|_| ApiError::Internal)?;
            Ok(lines)
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let node = crate::Node::init(&dir.path().join("r"), crate::repo::InitProfile::Test).expect("init");
        let ctx = RpcContext { node: std::sync::Arc::new(node), shutdown: tokio_util::sync::CancellationToken::new() };
        let app = axum::Router::new().route("/", route(command)).with_state(ctx);
        let resp = app.oneshot(req).await.expect("router");
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// A command may stop reading a part (a CAR reader done before the part's end); the parts after it
    /// must still arrive, however much of the first was left unread. The first part is also larger
    /// than axum's default body limit, which `route` lifts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_part_left_unread_does_not_lose_the_next() {
        let first = vec![b'7'; 3 * 1024 * 1024];
        let lines = heads(request(&[("first", &first), ("second", b"second part")])).await;
        assert_eq!(lines, "first=7777777777777777\nsecond=second part\n");
    }

    /// Also a small body that arrives, end included, after a first `Pending`: multer alone reads that as
    /// an incomplete stream (see `OnePieceAtATime`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_are_unescaped_as_kubo_escapes_them() {
        assert_eq!(heads(request(&[("dir%2Fa+b%25.txt", b"x")])).await, "dir/a b%.txt=x\n");
    }
}
