//! Responses: a command runs on a blocking thread and writes its output into a `BodyWriter`, which hands
//! it in chunks through a bounded channel to the response body, so a 1 GiB `cat` holds a few chunks, not
//! the file. The first message decides the status: an error before any output is a proper error
//! response; after output began, an error aborts the body.
//!
//! The three output kinds are kubo's: a byte stream (`X-Stream-Output`), a stream of JSON values, one a
//! line (`X-Chunked-Output`), and a single JSON value.

use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ApiError, EXPOSED_HEADERS};

/// The size of a chunk of the response: small writes are gathered up to it, large ones cut to it.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the command and the response body: at most 2 MiB per response.
const DEPTH: usize = 8;

/// One message from the command to the response.
enum Msg {
    Data(Bytes),
    Done,
    Failed(ApiError),
}

/// The command's end of a streamed response. Writes fail with `BrokenPipe` once the client is gone.
#[derive(Debug)]
pub(crate) struct BodyWriter {
    tx: mpsc::Sender<Msg>,
    buf: BytesMut,
}

impl BodyWriter {
    fn send(&mut self, data: Bytes) -> io::Result<()> {
        self.tx
            .blocking_send(Msg::Data(data))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client closed the response"))
    }

    /// Writes one JSON value and a newline, as kubo's encoder does.
    pub(crate) fn json(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut *self, value).map_err(io::Error::other)?;
        self.write_all(b"\n")
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= CHUNK {
            // Straight through, without gathering: one copy, from the caller's buffer into the chunk.
            let piece = &data[..CHUNK];
            self.send(Bytes::copy_from_slice(piece))?;
            return Ok(piece.len());
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            let chunk = self.buf.split().freeze();
            self.send(chunk)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(chunk)?;
        }
        Ok(())
    }
}

/// How a response is shaped.
#[derive(Debug)]
pub(crate) struct Output {
    headers: Vec<(HeaderName, HeaderValue)>,
    /// An upload still being read: an error response waits for it, so the client finishes sending and
    /// can read the error instead of having its request cut off.
    upload: Option<JoinHandle<()>>,
}

impl Output {
    /// A byte stream (`cat`, `get`, `block get`, `dag export`).
    pub(crate) fn stream(content_type: &'static str) -> Self {
        Self::with(&[("x-stream-output", "1")], content_type)
    }

    /// JSON values, one a line.
    pub(crate) fn channel() -> Self {
        Self::with(&[("x-chunked-output", "1")], "application/json")
    }

    fn with(extra: &[(&'static str, &'static str)], content_type: &'static str) -> Self {
        let mut headers: Vec<(HeaderName, HeaderValue)> =
            extra.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect();
        headers.push((header::CONTENT_TYPE, HeaderValue::from_static(content_type)));
        headers.push((header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS)));
        headers.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS)));
        Self { headers, upload: None }
    }

    /// kubo's `X-Content-Length`: the size of the content, known before it is sent.
    pub(crate) fn length(mut self, n: u64) -> Self {
        self.headers.push((HeaderName::from_static("x-content-length"), HeaderValue::from(n)));
        self
    }

    pub(crate) fn upload(mut self, upload: JoinHandle<()>) -> Self {
        self.upload = Some(upload);
        self
    }
}

/// Runs `command` on a blocking thread and streams what it writes as the response.
pub(crate) async fn respond<F>(output: Output, command: F) -> Response
where
    F: FnOnce(&mut BodyWriter) -> Result<(), ApiError> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(DEPTH);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        let mut out = BodyWriter { tx: tx.clone(), buf: BytesMut::new() };
        let result = catch_unwind(AssertUnwindSafe(|| command(&mut out).and_then(|()| Ok(out.flush()?))))
            .unwrap_or_else(|_| {
                tracing::error!("API command panicked");
                Err(ApiError::Internal)
            });
        let last = match result {
            Ok(()) => Msg::Done,
            Err(e) => Msg::Failed(e),
        };
        // The receiver is gone only when the client left; there is nobody left to tell.
        let _ = tx.blocking_send(last);
    });
    let first = match rx.recv().await {
        Some(Msg::Data(b)) => b,
        Some(Msg::Done) => {
            let mut resp = Response::new(Body::empty());
            resp.headers_mut().extend(output.headers);
            return resp;
        }
        Some(Msg::Failed(e)) => {
            if let Some(upload) = output.upload {
                // The upload task drains the rest of the request; a panic there changes nothing here.
                let _ = upload.await;
            }
            return e.into_response();
        }
        None => return ApiError::Internal.into_response(),
    };
    let body = futures::stream::unfold((Some(first), Some(rx)), |(first, rx)| async move {
        let mut rx = rx?;
        if let Some(b) = first {
            return Some((Ok(b), (None, Some(rx))));
        }
        let late = match rx.recv().await {
            Some(Msg::Data(b)) => return Some((Ok(b), (None, Some(rx)))),
            Some(Msg::Done) => return None,
            Some(Msg::Failed(e)) => e.message().to_string(),
            None => "the command ended without finishing its output".to_string(),
        };
        tracing::warn!(error = %late, "API command failed after its output began; aborting the response");
        Some((Err(LateError(late)), (None, None)))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().extend(output.headers);
    resp
}

/// The error that ends a response whose output had begun: the body stream fails with it, which makes
/// hyper abort the response; `inline_late_errors` can turn it into a last line instead.
#[derive(Debug)]
pub(crate) struct LateError(pub(crate) String);

impl std::fmt::Display for LateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LateError {}

/// For a client that asked for it (this project's CLI, whose HTTP client cannot read trailers), a JSON
/// stream that fails late ends with kubo's error object as its last line instead of breaking off.
pub(crate) fn inline_late_errors(resp: Response) -> Response {
    if !resp.headers().contains_key("x-chunked-output") {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let stream = futures::stream::unfold(Some(body.into_data_stream()), |stream| async move {
        use futures::StreamExt;
        let mut stream = stream?;
        match stream.next().await? {
            Ok(b) => Some((Ok::<_, std::convert::Infallible>(b), Some(stream))),
            Err(e) => {
                let inner = e.into_inner();
                let message = match inner.downcast_ref::<LateError>() {
                    Some(late) => late.0.clone(),
                    None => inner.to_string(),
                };
                let line = serde_json::json!({"Message": message, "Code": 0, "Type": "error"});
                Some((Ok(Bytes::from(format!("{line}\n"))), None))
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Runs `f` on a blocking thread (RocksDB and file I/O never run on an async worker).
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "API command panicked");
        Err(ApiError::Internal)
    })
}

/// A single JSON value, as kubo's `EmitOnce` sends it.
pub(crate) fn single(value: &impl Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => {
            let mut resp = (StatusCode::OK, format!("{text}\n")).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "API output did not serialize");
            ApiError::Internal.into_response()
        }
    }
}
