//! Request handling: from method, path, query and headers to a response, following the IPFS path and
//! trustless gateway specs.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use btfs_chunker::Cid;
use btfs_chunker::links::{CBOR, DAG_CBOR, DAG_JSON, JSON};
use btfs_chunker::walk::UnixfsNode;
use btfs_chunker::{block::RAW, dagpb};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::GatewayConfig;
use crate::car::stream_car;
use crate::content::{self, Blocks, ContentError, Resolved, decode, dir_entries, file_size, read_range};
use crate::listing;
use crate::metrics::Metrics;
use crate::mime;
use crate::request::{
    CarOrder, CarParams, ContentPath, Format, MAX_PATH_LEN, PathError, Query, negotiate, parse_range,
};
use crate::source::{ContentSource, Fetch, SourceError};
use crate::tar;

/// `Cache-Control` of everything addressed by an immutable CID.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// Headers browsers may read from cross-origin responses.
const EXPOSE: &str = "Content-Length, Content-Range, X-Chunked-Output, X-Stream-Output, X-Ipfs-Path, X-Ipfs-Roots";
/// Request headers cross-origin pages may send.
const ALLOW_HEADERS: &str = "Content-Type, Range, User-Agent, X-Requested-With";
/// `Cache-Control` of generated pages (listings), whose markup may change between versions.
const GENERATED: &str = "public, max-age=604800, stale-while-revalidate=2678400";

struct Gateway<S> {
    source: Arc<S>,
    config: GatewayConfig,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
}

pub(crate) fn router<S: ContentSource>(source: Arc<S>, config: GatewayConfig, metrics: Arc<Metrics>) -> Router {
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let gw = Arc::new(Gateway { source, config, metrics, permits });
    Router::new().fallback(handle::<S>).with_state(gw)
}

/// An error response: a status and a message safe to show (never internal details for 5xx).
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl HttpError {
    fn bad_path(raw_path: &str, e: PathError) -> Self {
        if e == PathError::NotContent {
            return Self::new(StatusCode::NOT_FOUND, e.to_string());
        }
        Self::new(StatusCode::BAD_REQUEST, format!("invalid path {raw_path:?}: {e}"))
    }
}

impl HttpError {
    fn from_content(e: ContentError, fetch: Fetch) -> Self {
        use ContentError as C;
        match e {
            C::Source(SourceError::NotFound(cid)) if fetch == Fetch::LocalOnly => Self::new(
                StatusCode::PRECONDITION_FAILED,
                format!("block {cid} is not in the local store (Cache-Control: only-if-cached)"),
            ),
            // Only a source without a network says NotFound for a fetchable read: nothing can produce it.
            C::Source(SourceError::NotFound(cid)) => {
                Self::new(StatusCode::NOT_FOUND, format!("block {cid} is not in this node's store"))
            }
            C::Source(SourceError::Timeout(cid)) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, format!("block {cid} was not retrieved in time"))
            }
            C::Deadline => Self::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
            C::Source(SourceError::TooLarge { cid, .. }) => {
                Self::new(StatusCode::BAD_GATEWAY, format!("block {cid} is larger than this gateway serves"))
            }
            C::Source(SourceError::Failed { cid, reason }) => {
                tracing::error!(%cid, %reason, "gateway: reading a block failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error reading a block")
            }
            C::NoLink { .. } | C::NotDirectory { .. } => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            C::InsideBlock { .. } => Self::new(StatusCode::NOT_IMPLEMENTED, e.to_string()),
            C::Malformed { .. } | C::TooDeep { .. } | C::Sizes { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, e.to_string())
            }
        }
    }
}

async fn handle<S: ContentSource>(State(gw): State<Arc<Gateway<S>>>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let head = method == Method::HEAD;
    let path = req.uri().path().to_string();
    let mut response = match gw.permits.clone().try_acquire_owned() {
        Ok(permit) => match tokio::time::timeout(gw.config.head_timeout, gw.respond(req, permit)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => error_response(e),
            Err(_) => error_response(HttpError::from_content(ContentError::Deadline, Fetch::Network)),
        },
        Err(_) => {
            gw.metrics.record_busy();
            let mut r = error_response(HttpError::new(StatusCode::TOO_MANY_REQUESTS, "gateway is busy"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, OPTIONS"));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    gw.metrics.record_response(head, status, elapsed);
    tracing::info!(
        target: "btfs::gateway::access",
        %method, path, status, micros = elapsed.as_micros() as u64, "request"
    );
    response
}

fn error_response(e: HttpError) -> Response {
    let mut r =
        (e.status, format!("{}: {}\n", e.status.canonical_reason().unwrap_or("error"), e.message)).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Everything a response builder needs to know about the request.
struct Ctx<S> {
    path: ContentPath,
    raw_path: String,
    query: Query,
    raw_query: Option<String>,
    headers: HeaderMap,
    head: bool,
    blocks: Blocks<S>,
    permit: OwnedSemaphorePermit,
}

impl<S: ContentSource> Gateway<S> {
    async fn respond(&self, req: Request, permit: OwnedSemaphorePermit) -> Result<Response, HttpError> {
        let method = req.method();
        if method == Method::OPTIONS {
            let mut r = StatusCode::OK.into_response();
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
            return Ok(r);
        }
        if method != Method::GET && method != Method::HEAD {
            let mut r = error_response(HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} is not allowed; the gateway is read-only"),
            ));
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
            return Ok(r);
        }
        let raw_path = req.uri().path().to_string();
        if raw_path.len() > MAX_PATH_LEN {
            return Err(HttpError::new(StatusCode::URI_TOO_LONG, "path is too long"));
        }
        let path = ContentPath::parse(&raw_path).map_err(|e| HttpError::bad_path(&raw_path, e))?;
        let raw_query = req.uri().query().map(str::to_string);
        let query = Query::parse(raw_query.as_deref());
        let headers = req.headers().clone();
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let format = negotiate(&query, accept).map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let only_if_cached = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("only-if-cached")));
        let fetch = if only_if_cached { Fetch::LocalOnly } else { Fetch::Network };
        let blocks = Blocks::new(self.source.clone(), fetch, self.config.block_timeout);
        let ctx = Ctx { path, raw_path, query, raw_query, headers, head: method == Method::HEAD, blocks, permit };
        let resolved = content::resolve(&ctx.blocks, ctx.path.root, &ctx.path.segments)
            .await
            .map_err(|e| HttpError::from_content(e, fetch))?;
        let result = match format {
            Format::Raw => Ok::<_, ServeError>(self.raw(&ctx, resolved)),
            Format::Car(params) => Ok(self.car(ctx, resolved, params)),
            Format::Default => self.deserialized(ctx, resolved).await,
            // A UnixFS file asked for as JSON or CBOR is served as the file (whose type is sniffed).
            Format::Json | Format::Cbor if matches!(resolved.cid.codec(), RAW | dagpb::CODEC) => {
                self.deserialized(ctx, resolved).await
            }
            Format::DagJson => self.codec_as_is(&ctx, resolved, Some(DAG_JSON)),
            Format::Json => self.codec_as_is(&ctx, resolved, Some(JSON)),
            Format::DagCbor => self.codec_as_is(&ctx, resolved, Some(DAG_CBOR)),
            Format::Cbor => self.codec_as_is(&ctx, resolved, Some(CBOR)),
            Format::Tar => self.tar(ctx, resolved).await,
            Format::IpnsRecord => {
                Err(HttpError::new(StatusCode::NOT_IMPLEMENTED, "this gateway serves no IPNS records").into())
            }
        };
        result.map_err(|e| e.into_http(fetch))
    }

    /// `?format=raw`: the terminal block as it is.
    fn raw(&self, ctx: &Ctx<S>, resolved: Resolved) -> Response {
        let etag = format!("\"{}.raw\"", resolved.cid);
        if let Some(r) = not_modified(&ctx.headers, &etag) {
            return r;
        }
        let mut r = self.bytes_response(ctx, resolved.block, true);
        let h = r.headers_mut();
        set(h, header::CONTENT_TYPE, "application/vnd.ipld.raw");
        set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(h, header::CONTENT_DISPOSITION, &attachment(&ctx.query, &format!("{}.bin", resolved.cid)));
        common(h, ctx, &resolved.roots, &etag, IMMUTABLE);
        r
    }

    /// `?format=car`: a CARv1 stream of the path's blocks and the terminal DAG.
    fn car(&self, ctx: Ctx<S>, resolved: Resolved, params: CarParams) -> Response {
        let order = if params.order == CarOrder::Dfs { "dfs" } else { "unk" };
        let dups = if params.dups { "y" } else { "n" };
        let content_type = format!("application/vnd.ipld.car; version=1; order={order}; dups={dups}");
        // The ETag covers everything that changes the bytes: the path, scope, range, order and dups.
        let mut hasher = Sha256::new();
        hasher.update(ctx.path.encoded().as_bytes());
        hasher.update(format!("{:?}|{:?}|{order}|{dups}", params.scope, params.entity_bytes).as_bytes());
        let digest = hasher.finalize();
        let etag = format!("W/\"{}.car.{}\"", resolved.cid, hex(&digest[..6]));
        if let Some(r) = not_modified(&ctx.headers, &etag) {
            return r;
        }
        let roots = resolved.roots.clone();
        let cid = resolved.cid;
        let body = if ctx.head {
            Body::empty()
        } else {
            let rx = stream_car(ctx.blocks.clone(), ctx.path.root, resolved, params);
            self.stream_body(rx, ctx.permit)
        };
        let mut r = Response::new(body);
        let h = r.headers_mut();
        set(h, header::CONTENT_TYPE, &content_type);
        set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(h, header::CONTENT_DISPOSITION, &attachment(&ctx.query, &format!("{cid}.car")));
        set(h, header::ACCEPT_RANGES, "none");
        let ctx_view = CtxView { path: &ctx.path, raw_path: &ctx.raw_path };
        common_view(h, &ctx_view, &roots, &etag, IMMUTABLE);
        r
    }

    /// `?format=tar`: a UnixFS file or tree as a tar stream, planned (and its names checked) before the
    /// response starts.
    async fn tar(&self, ctx: Ctx<S>, resolved: Resolved) -> Result<Response, ServeError> {
        if !matches!(resolved.cid.codec(), RAW | dagpb::CODEC) {
            return Err(HttpError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!("{} is not UnixFS, so it has no tar form", resolved.cid),
            )
            .into());
        }
        let etag = format!("W/\"{}.x-tar\"", resolved.cid);
        if let Some(r) = not_modified(&ctx.headers, &etag) {
            return Ok(r);
        }
        let root_name = display_cid(&ctx, &resolved.cid);
        let plan =
            tar::plan(&ctx.blocks, &root_name, resolved.cid, resolved.block.clone()).await.map_err(|e| match e {
                tar::TarError::Content(e) => ServeError::Content(e),
                e => HttpError::new(StatusCode::BAD_REQUEST, e.to_string()).into(),
            })?;
        let body =
            if ctx.head { Body::empty() } else { self.stream_body(tar::stream(ctx.blocks.clone(), plan), ctx.permit) };
        let mut r = Response::new(body);
        let h = r.headers_mut();
        set(h, header::CONTENT_TYPE, "application/x-tar");
        set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(h, header::CONTENT_DISPOSITION, &attachment(&ctx.query, &format!("{}.tar", resolved.cid)));
        let view = CtxView { path: &ctx.path, raw_path: &ctx.raw_path };
        common_view(h, &view, &resolved.roots, &etag, IMMUTABLE);
        Ok(r)
    }

    /// The default, deserialized response: UnixFS files and directories; other codecs as they are.
    async fn deserialized(&self, ctx: Ctx<S>, resolved: Resolved) -> Result<Response, ServeError> {
        match resolved.cid.codec() {
            RAW | dagpb::CODEC => {}
            DAG_JSON | DAG_CBOR if wants_html(&ctx.headers) => return Ok(self.dag_index(&ctx, resolved)),
            DAG_JSON | JSON | DAG_CBOR | CBOR => {
                return self.codec_as_is(&ctx, resolved, None);
            }
            other => {
                return Err(HttpError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!("codec {other:#x} has no deserialized response; use ?format=raw or ?format=car"),
                )
                .into());
            }
        }
        let node = decode(&resolved.cid, &resolved.block)?;
        match node {
            UnixfsNode::File { .. } => self.file(ctx, resolved, node, None).await,
            UnixfsNode::Directory { .. } | UnixfsNode::HamtShard { .. } => self.directory(ctx, resolved, node).await,
            UnixfsNode::Symlink { target } => {
                let etag = format!("\"{}\"", resolved.cid);
                if let Some(r) = not_modified(&ctx.headers, &etag) {
                    return Ok(r);
                }
                let mut r = self.bytes_response(&ctx, Bytes::from(target), false);
                let h = r.headers_mut();
                set(h, header::CONTENT_TYPE, "inode/symlink");
                common(h, &ctx, &resolved.roots, &etag, IMMUTABLE);
                Ok(r)
            }
        }
    }

    async fn directory(&self, ctx: Ctx<S>, resolved: Resolved, node: UnixfsNode) -> Result<Response, ServeError> {
        if !ctx.path.trailing_slash {
            let mut location = format!("{}/", ctx.path.encoded());
            if let Some(q) = ctx.raw_query.as_deref().filter(|q| !q.is_empty()) {
                location.push('?');
                location.push_str(q);
            }
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            let h = r.headers_mut();
            set(h, header::LOCATION, &location);
            common(h, &ctx, &resolved.roots, &format!("\"{}\"", resolved.cid), IMMUTABLE);
            return Ok(r);
        }
        // index.html, when present, is served in place of a listing.
        let index = ["index.html".to_string()];
        match content::resolve(&ctx.blocks, resolved.cid, &index).await {
            Ok(found) => {
                let file = decode(&found.cid, &found.block)?;
                if matches!(file, UnixfsNode::File { .. }) {
                    // Headers name the directory (its path, roots and ETag), the body is index.html.
                    let index_resolved = Resolved { roots: resolved.roots.clone(), ..found };
                    return self.file(ctx, index_resolved, file, Some(resolved.cid)).await;
                }
            }
            Err(ContentError::NoLink { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let etag = format!("\"DirIndex-{}_CID-{}\"", listing::TEMPLATE_VERSION, resolved.cid);
        if let Some(r) = not_modified(&ctx.headers, &etag) {
            return Ok(r);
        }
        let entries = dir_entries(&ctx.blocks, resolved.cid, node).await?;
        let dir_cid = resolved.roots.last().map(|c| display_cid(&ctx, c)).unwrap_or_default();
        let html = listing::render(&ctx.path, &dir_cid, &entries);
        let mut r = self.bytes_response(&ctx, Bytes::from(html), false);
        let h = r.headers_mut();
        set(h, header::CONTENT_TYPE, "text/html; charset=utf-8");
        common(h, &ctx, &resolved.roots, &etag, GENERATED);
        Ok(r)
    }

    async fn file(
        &self,
        ctx: Ctx<S>,
        resolved: Resolved,
        node: UnixfsNode,
        index_of: Option<Cid>,
    ) -> Result<Response, ServeError> {
        let size = file_size(&resolved.cid, &node)?;
        let etag = format!("\"{}\"", index_of.unwrap_or(resolved.cid));
        let forced_type = index_of.map(|_| "text/html; charset=utf-8");
        if let Some(r) = not_modified(&ctx.headers, &etag) {
            return Ok(r);
        }
        let UnixfsNode::File { own, children, .. } = &node else {
            return Err(ContentError::malformed(&resolved.cid, "not a file").into());
        };
        let single_block = children.is_empty();
        let name = ctx.query.filename.as_deref().or(ctx.path.last_name());
        let content_type = match forced_type.or_else(|| name.and_then(mime::by_extension)) {
            Some(t) => t,
            None if single_block => {
                let data = &resolved.block[own.clone()];
                mime::sniff_file(data, data.len() <= mime::SNIFF_LEN)
            }
            None => {
                let end = size.min(mime::SNIFF_LEN as u64);
                let prefix = read_range(&ctx.blocks, resolved.cid, resolved.block.clone(), 0, end).await?;
                mime::sniff_file(&prefix, end == size)
            }
        };
        let range = ctx.headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range);
        let (status, from, to) = match range {
            None => (StatusCode::OK, 0, size),
            Some(range) => match range.resolve(size) {
                Some((from, to)) => (StatusCode::PARTIAL_CONTENT, from, to),
                None => return Ok(range_not_satisfiable(size)),
            },
        };
        let len = to - from;
        let body = if ctx.head || len == 0 {
            Body::empty()
        } else if single_block {
            let lo = own.start + from as usize;
            Body::from(resolved.block.slice(lo..lo + len as usize))
        } else {
            let rx = content::stream_file(ctx.blocks.clone(), resolved.cid, resolved.block.clone(), from, to);
            self.stream_body(rx, ctx.permit)
        };
        if single_block && !ctx.head {
            self.metrics.record_bytes(len as usize);
        }
        let mut r = Response::new(body);
        *r.status_mut() = status;
        let h = r.headers_mut();
        set(h, header::CONTENT_TYPE, content_type);
        set(h, header::CONTENT_LENGTH, &len.to_string());
        set(h, header::ACCEPT_RANGES, "bytes");
        if status == StatusCode::PARTIAL_CONTENT {
            set(h, header::CONTENT_RANGE, &format!("bytes {from}-{}/{size}", to - 1));
        }
        if let Some(d) = disposition(&ctx.query) {
            set(h, header::CONTENT_DISPOSITION, &d);
        }
        let ctx_view = CtxView { path: &ctx.path, raw_path: &ctx.raw_path };
        common_view(h, &ctx_view, &resolved.roots, &etag, IMMUTABLE);
        self.metrics.record_origin(!ctx.blocks.used_network());
        Ok(r)
    }

    /// The HTML page a browser gets for a dag-json or dag-cbor block.
    fn dag_index(&self, ctx: &Ctx<S>, resolved: Resolved) -> Response {
        let etag = format!("\"DagIndex-{}_CID-{}\"", listing::TEMPLATE_VERSION, resolved.cid);
        if let Some(r) = not_modified(&ctx.headers, &etag) {
            return r;
        }
        let codec = if resolved.cid.codec() == DAG_JSON { "dag-json" } else { "dag-cbor" };
        let links = btfs_chunker::links::links(&resolved.cid, &resolved.block).unwrap_or_default();
        let cid = display_cid(ctx, &resolved.cid);
        let html = listing::render_dag(&ctx.path.encoded(), &cid, codec, &resolved.block, &links);
        let mut r = self.bytes_response(ctx, Bytes::from(html), false);
        let h = r.headers_mut();
        set(h, header::CONTENT_TYPE, "text/html; charset=utf-8");
        common(h, ctx, &resolved.roots, &etag, GENERATED);
        r
    }

    /// dag-json, dag-cbor, json and cbor blocks, served as they are stored when the codec is one of `codecs`.
    /// `requested` is the format asked for (as a codec), `None` for the block's own. IPIP-524: no conversion;
    /// dag-json is also valid JSON and dag-cbor valid CBOR, but not the other way round.
    fn codec_as_is(&self, ctx: &Ctx<S>, resolved: Resolved, requested: Option<u64>) -> Result<Response, ServeError> {
        let codec = resolved.cid.codec();
        let served = requested.unwrap_or(codec);
        let compatible = served == codec || (served, codec) == (JSON, DAG_JSON) || (served, codec) == (CBOR, DAG_CBOR);
        if !compatible {
            return Err(HttpError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!("{} is codec {codec:#x}; converting it to the requested format is not supported", resolved.cid),
            )
            .into());
        }
        let content_type = match served {
            DAG_JSON => "application/vnd.ipld.dag-json",
            JSON => "application/json",
            DAG_CBOR => "application/vnd.ipld.dag-cbor",
            _ => "application/cbor",
        };
        let etag = format!("\"{}.{}\"", resolved.cid, content_type.rsplit(['/', '.']).next().unwrap_or("bin"));
        if let Some(r) = not_modified(&ctx.headers, &etag) {
            return Ok(r);
        }
        let name = format!("{}.{}", resolved.cid, if matches!(codec, DAG_JSON | JSON) { "json" } else { "cbor" });
        // JSON is readable in a browser; CBOR is binary and downloads.
        let kind = if matches!(codec, DAG_JSON | JSON) && !ctx.query.download { "inline" } else { "attachment" };
        let mut r = self.bytes_response(ctx, resolved.block, true);
        let h = r.headers_mut();
        set(h, header::CONTENT_TYPE, content_type);
        set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(h, header::CONTENT_DISPOSITION, &content_disposition(kind, ctx.query.filename.as_deref().unwrap_or(&name)));
        common(h, ctx, &resolved.roots, &etag, IMMUTABLE);
        Ok(r)
    }

    /// A response with a body already in memory (dropped for HEAD, but its length kept); with `ranged`, a
    /// single `Range` gets 206 or 416.
    fn bytes_response(&self, ctx: &Ctx<S>, data: Bytes, ranged: bool) -> Response {
        let size = data.len() as u64;
        let range = ranged.then(|| ctx.headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range));
        let (status, from, to) = match range.flatten().map(|r| r.resolve(size)) {
            None => (StatusCode::OK, 0, size),
            Some(Some((from, to))) => (StatusCode::PARTIAL_CONTENT, from, to),
            Some(None) => return range_not_satisfiable(size),
        };
        let len = to - from;
        let mut r = if ctx.head {
            Response::new(Body::empty())
        } else {
            self.metrics.record_bytes(len as usize);
            Response::new(Body::from(data.slice(from as usize..to as usize)))
        };
        *r.status_mut() = status;
        let h = r.headers_mut();
        set(h, header::CONTENT_LENGTH, &len.to_string());
        if ranged {
            set(h, header::ACCEPT_RANGES, "bytes");
        }
        if status == StatusCode::PARTIAL_CONTENT {
            set(h, header::CONTENT_RANGE, &format!("bytes {from}-{}/{size}", to - 1));
        }
        self.metrics.record_origin(!ctx.blocks.used_network());
        r
    }

    /// Turns a producer's channel into a response body that holds the request's concurrency permit until
    /// the last byte is sent. A failure mid-stream aborts the connection, so a client never mistakes a
    /// truncated body for a whole one.
    fn stream_body(&self, rx: mpsc::Receiver<Result<Bytes, ContentError>>, permit: OwnedSemaphorePermit) -> Body {
        let metrics = self.metrics.clone();
        let stream = futures::stream::unfold((rx, permit, metrics), |(mut rx, permit, metrics)| async move {
            let item = match rx.recv().await? {
                Ok(bytes) => {
                    metrics.record_bytes(bytes.len());
                    Ok(bytes)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gateway: response aborted mid-stream");
                    Err(io::Error::other(e.to_string()))
                }
            };
            Some((item, (rx, permit, metrics)))
        });
        Body::from_stream(stream)
    }
}

/// Why a response could not be built: an HTTP error already decided, or a content error to map.
enum ServeError {
    Http(HttpError),
    Content(ContentError),
}

impl From<HttpError> for ServeError {
    fn from(e: HttpError) -> Self {
        Self::Http(e)
    }
}

impl From<ContentError> for ServeError {
    fn from(e: ContentError) -> Self {
        Self::Content(e)
    }
}

impl ServeError {
    fn into_http(self, fetch: Fetch) -> HttpError {
        match self {
            Self::Http(e) => e,
            Self::Content(e) => HttpError::from_content(e, fetch),
        }
    }
}

struct CtxView<'a> {
    path: &'a ContentPath,
    raw_path: &'a str,
}

fn display_cid<S>(ctx: &Ctx<S>, cid: &Cid) -> String {
    if *cid == ctx.path.root { ctx.path.root_text.clone() } else { cid.to_string() }
}

/// Whether the client is a browser asking for a page (`Accept: text/html`).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")))
}

/// 416 with the `Content-Range: bytes */size` RFC 9110 asks for.
fn range_not_satisfiable(size: u64) -> Response {
    let mut r = error_response(HttpError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        format!("range is outside the content's {size} bytes"),
    ));
    set(r.headers_mut(), header::CONTENT_RANGE, &format!("bytes */{size}"));
    r
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Headers every content response carries.
fn common<S>(h: &mut HeaderMap, ctx: &Ctx<S>, roots: &[Cid], etag: &str, cache: &str) {
    common_view(h, &CtxView { path: &ctx.path, raw_path: &ctx.raw_path }, roots, etag, cache);
}

fn common_view(h: &mut HeaderMap, ctx: &CtxView<'_>, roots: &[Cid], etag: &str, cache: &str) {
    set(h, header::ETAG, etag);
    set(h, header::CACHE_CONTROL, cache);
    set(h, header::HeaderName::from_static("x-ipfs-path"), ctx.raw_path);
    let roots: Vec<String> = roots
        .iter()
        .enumerate()
        .map(|(i, c)| if i == 0 { ctx.path.root_text.clone() } else { c.to_string() })
        .collect();
    set(h, header::HeaderName::from_static("x-ipfs-roots"), &roots.join(","));
}

/// 304 when `If-None-Match` names this ETag (or `*`).
fn not_modified(headers: &HeaderMap, etag: &str) -> Option<Response> {
    let inm = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    let bare = etag.trim_start_matches("W/");
    let hit = inm.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.trim_start_matches("W/") == bare);
    hit.then(|| {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        set(r.headers_mut(), header::ETAG, etag);
        set(r.headers_mut(), header::CACHE_CONTROL, IMMUTABLE);
        r
    })
}

/// `Content-Disposition` for `?filename=` and `?download=true`.
fn disposition(query: &Query) -> Option<String> {
    let name = query.filename.as_deref()?;
    let kind = if query.download { "attachment" } else { "inline" };
    Some(content_disposition(kind, name))
}

/// `attachment` with the given filename, or the one from `?filename=`.
fn attachment(query: &Query, default: &str) -> String {
    content_disposition("attachment", query.filename.as_deref().unwrap_or(default))
}

fn content_disposition(kind: &str, name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    if ascii == name {
        format!("{kind}; filename=\"{name}\"")
    } else {
        format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}", urlencoding::encode(name))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
