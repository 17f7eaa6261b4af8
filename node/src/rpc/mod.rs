//! The kubo-compatible RPC API: `POST /api/v0/<command>?arg=...` (and `/api/v1/...`, go-btfs's prefix) as
//! an axum `Router` over a shared `Node`.
//!
//! Layout: `core_routes` maps command paths to handlers (`files`: add, cat, get, ls; `blocks`: pin, block,
//! dag, repo; `system`: config, id, version, shutdown). `api` mounts a set of command routes under both
//! prefixes behind kubo's request checks (method, then origin); the daemon merges its network commands
//! into `core_routes()` before calling it. Handlers only translate: they parse the query (`args`), call
//! one `Node` method on a blocking thread (RocksDB and file I/O are synchronous, so never on an async
//! worker), and shape the result as kubo does (`body`). Errors become kubo's JSON error (`error`).
//!
//! Memory stays bounded whatever the size of the content: outputs stream from the blocking thread through
//! a bounded channel of chunks (`body::respond`), and uploads stream the other way, one multipart part at
//! a time, through bounded channels into a blocking `Read` (`upload`).
//!
//! Kubo behaviours kept: 405 for any method but POST (OPTIONS answers 204), 403 for a browser request
//! whose `Origin` or `Referer` is not the API's own loopback origin or listed in the config's
//! `API.HTTPHeaders.Access-Control-Allow-Origin`, plain-text 404 for an unknown command, JSON errors
//! (`{"Message","Code","Type":"error"}`: 400 with code 1 for a bad argument, 500 with code 0 for a failed
//! command), `X-Stream-Output`/`X-Chunked-Output`/`X-Content-Length` headers. An error after output began
//! aborts the response (kubo sends it in an `X-Stream-Error` trailer, which hyper sends only to clients
//! that ask for trailers; aborting means no client takes a truncated stream for a whole one). A client
//! that sends `INLINE_ERRORS_HEADER` gets such an error on a JSON stream as a last line instead.

mod args;
mod bittorrent;
mod blocks;
mod body;
mod error;
mod files;
mod market;
mod net;
mod system;
pub(crate) mod upload;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::Node;

pub(crate) use self::args::Args;
pub(crate) use self::body::{BodyWriter, Output, blocking, respond, single};

/// A request header (not kubo's) asking that a JSON stream failing after its output began end with
/// kubo's error object as a last line rather than break off; the CLI's remote mode sends it.
pub const INLINE_ERRORS_HEADER: &str = "x-btfs-inline-errors";
pub(crate) use self::error::ApiError;

/// What every handler gets: the node and the daemon's shutdown signal.
#[derive(Clone)]
pub struct RpcContext {
    pub node: Arc<Node>,
    /// Cancelled by `POST /api/v0/shutdown`; the daemon stops when it is.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for RpcContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcContext").field("shutdown", &self.shutdown.is_cancelled()).finish_non_exhaustive()
    }
}

/// The API over the local commands: `api(core_routes(), ctx)`.
pub fn router(ctx: RpcContext) -> Router {
    api(core_routes(), ctx)
}

/// The commands this module implements, at paths relative to the API prefix (`/add`, `/pin/ls`, ...).
/// Merge more command routes into this before handing it to `api`.
pub fn core_routes() -> Router<RpcContext> {
    Router::new()
        .merge(files::routes())
        .merge(blocks::routes())
        .merge(system::routes())
        .merge(net::routes())
        .merge(market::routes())
        .merge(bittorrent::routes())
}

/// Mounts command routes under `/api/v0` and `/api/v1` behind kubo's checks, with kubo's 404 for
/// everything else.
pub fn api(commands: Router<RpcContext>, ctx: RpcContext) -> Router {
    Router::new()
        .nest("/api/v0", commands.clone())
        .nest("/api/v1", commands)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

/// The header names kubo exposes to browsers.
const EXPOSED_HEADERS: &str = "X-Stream-Output, X-Chunked-Output, X-Content-Length";

/// kubo's checks on every API request, in kubo's order: the method, then the origin. Each API request
/// runs in its own span, which the command's blocking thread and upload task carry on.
async fn guard(State(ctx): State<RpcContext>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !(path.starts_with("/api/v0/") || path.starts_with("/api/v1/")) {
        return next.run(req).await;
    }
    let span = tracing::debug_span!("rpc", method = %req.method(), path = %path);
    checked(ctx, req, next).instrument(span).await
}

async fn checked(ctx: RpcContext, req: Request, next: Next) -> Response {
    let origin_ok = request_allowed(&ctx, req.headers());
    match *req.method() {
        Method::POST => {}
        Method::OPTIONS => return preflight(req.headers(), origin_ok),
        _ => {
            let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "405 - Method Not Allowed");
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
            return resp;
        }
    }
    if !origin_ok {
        tracing::warn!(path = %req.uri().path(), "API refused a cross-origin request (possible CSRF)");
        return plain(StatusCode::FORBIDDEN, "403 - Forbidden");
    }
    let origin = req.headers().get(header::ORIGIN).cloned();
    let inline_errors = req.headers().contains_key(INLINE_ERRORS_HEADER);
    let mut resp = next.run(req).await;
    if inline_errors {
        resp = body::inline_late_errors(resp);
    }
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// kubo answers OPTIONS with 204; a CORS preflight from an allowed origin also gets the CORS headers.
fn preflight(headers: &HeaderMap, origin_ok: bool) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
    if let Some(origin) = headers.get(header::ORIGIN).filter(|_| origin_ok) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
    }
    resp
}

async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "404 page not found")
}

/// A plain-text response as Go's `http.Error` writes it.
fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut resp = (status, format!("{text}\n")).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// Browser extensions kubo always lets in (ipfs-companion and its beta).
const COMPANION_ORIGINS: &[&str] =
    &["chrome-extension://nibjojkomfdiaoajekhjakgkdhaomnch", "chrome-extension://hjoieblefckbooibpepigmacodalfndh"];

/// kubo's CSRF rule: a request without `Origin` and `Referer` (curl, the CLI, RPC clients outside a browser)
/// passes; one with them passes only if they name an allowed origin.
fn request_allowed(ctx: &RpcContext, headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().ok());
    let referer = headers.get(header::REFERER).map(|v| v.to_str().ok().and_then(referer_origin));
    if origin.is_none() && referer.is_none() {
        return true;
    }
    let allowed = allowed_origins(ctx, headers);
    let ok = |o: Option<Option<&str>>| match o {
        None => true,
        Some(None) => false,
        Some(Some(o)) => allowed.iter().any(|a| a == "*" || a == o),
    };
    ok(origin) && ok(referer.as_ref().map(|r| r.as_deref()))
}

/// The origins allowed to call the API: the API's own origin on every loopback name (kubo's defaults,
/// with the port taken from `Host`, which a browser sets to the port it connects to), the companion
/// extension, and whatever the config lists in `API.HTTPHeaders.Access-Control-Allow-Origin`.
fn allowed_origins(ctx: &RpcContext, headers: &HeaderMap) -> Vec<String> {
    let mut out: Vec<String> = COMPANION_ORIGINS.iter().map(|s| (*s).to_string()).collect();
    if let Some(port) = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(host_port) {
        for scheme in ["http", "https"] {
            for host in ["127.0.0.1", "[::1]", "localhost"] {
                out.push(format!("{scheme}://{host}{port}"));
            }
        }
    }
    let config = ctx.node.repo().config();
    if let Ok(serde_json::Value::Array(list)) = config.get("API.HTTPHeaders.Access-Control-Allow-Origin") {
        out.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    out
}

/// `":5001"` for `Host: 127.0.0.1:5001` or `[::1]:5001`; empty when the host has no port.
fn host_port(host: &str) -> &str {
    let after_ipv6 = host.rfind(']').map_or(0, |i| i + 1);
    host[after_ipv6..].rfind(':').map_or("", |i| &host[after_ipv6 + i..])
}

/// `scheme://host[:port]` of a referer URL, as Go builds it from `url.Parse`.
fn referer_origin(referer: &str) -> Option<String> {
    let (scheme, rest) = referer.split_once("://")?;
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    Some(format!("{}://{host}", scheme.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests;
