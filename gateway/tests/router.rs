//! The gateway's router called in-process over an in-memory source: status codes, headers and bodies for
//! good requests, and the limits and errors for bad ones and bad sources. The same router over the node's
//! real store is tested end to end in `tests/tests/gateway_conformance.rs`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use btfs_chunker::car::CarReader;
use btfs_chunker::chunk::import_bytes;
use btfs_chunker::dir::DirectoryBuilder;
use btfs_chunker::import::Options;
use btfs_chunker::{Block, Cid, dagpb, unixfs};
use btfs_gateway::{ContentSource, Fetch, GatewayConfig, MemorySource, Metrics, Origin, SourceError, router};
use bytes::Bytes;
use tower::ServiceExt;

/// A small site: `index/` with an index.html, `files/` with a text file and a 1 MiB file.
struct Site {
    source: MemorySource,
    root: Cid,
    big: Vec<u8>,
}

fn add(source: &mut MemorySource, blocks: Vec<Block>) {
    for b in blocks {
        source.insert(&b.cid, b.data).expect("blocks hash to their CIDs");
    }
}

fn site() -> Site {
    let params = Options::default().resolve().expect("default options");
    let mut source = MemorySource::new();
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = |data: &[u8], source: &mut MemorySource| {
        let (link, blocks) = import_bytes(&params, data);
        add(source, blocks);
        link
    };
    let hello = file(b"hello gateway\n", &mut source);
    let big_link = file(&big, &mut source);
    let index = file(b"<!doctype html><p>home</p>", &mut source);
    let dir = |entries: Vec<(&str, btfs_chunker::Link)>, source: &mut MemorySource| {
        let mut d = DirectoryBuilder::new();
        for (name, link) in entries {
            d.insert(name.to_string(), link).expect("valid name");
        }
        let mut blocks = Vec::new();
        let link = d.finish(&params.dir, &mut |b| blocks.push(b));
        add(source, blocks);
        link
    };
    let files = dir(vec![("hello.txt", hello), ("big.bin", big_link), ("a b&c.txt", hello)], &mut source);
    let site_dir = dir(vec![("index.html", index)], &mut source);
    let root = dir(vec![("files", files), ("site", site_dir)], &mut source).cid;
    Site { source, root, big }
}

fn app<S: ContentSource>(source: S, config: GatewayConfig) -> axum::Router {
    router(Arc::new(source), config, Arc::new(Metrics::new()))
}

async fn send(app: &axum::Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app.clone().oneshot(req.body(Body::empty()).expect("request")).await.expect("infallible")
}

async fn body(r: Response) -> Vec<u8> {
    to_bytes(r.into_body(), usize::MAX).await.expect("body").to_vec()
}

fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn files_stream_with_headers_ranges_and_etags() {
    let s = site();
    let app = app(s.source, GatewayConfig::default());
    let path = format!("/ipfs/{}/files/big.bin", s.root);
    let r = send(&app, "GET", &path, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "1048576");
    assert_eq!(header(&r, "cache-control"), "public, max-age=29030400, immutable");
    assert_eq!(header(&r, "x-ipfs-path"), path);
    assert!(header(&r, "x-ipfs-roots").starts_with(&s.root.to_string()));
    let etag = header(&r, "etag").to_string();
    assert!(etag.starts_with("\"Qm"), "{etag}");
    assert_eq!(body(r).await, s.big);

    let r = send(&app, "GET", &path, &[("range", "bytes=300000-300009")]).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 300000-300009/1048576");
    assert_eq!(body(r).await, &s.big[300000..300010]);

    let r = send(&app, "GET", &path, &[("range", "bytes=2000000-")]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), "bytes */1048576");

    let r = send(&app, "HEAD", &path, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "1048576");
    assert!(body(r).await.is_empty());

    let r = send(&app, "GET", &path, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let r = send(&app, "GET", &format!("/btfs/{}/files/hello.txt", s.root), &[]).await;
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(body(r).await, b"hello gateway\n");
}

#[tokio::test]
async fn directories_redirect_list_and_serve_index_html() {
    let s = site();
    let app = app(s.source, GatewayConfig::default());
    let r = send(&app, "GET", &format!("/ipfs/{}/files?x=1", s.root), &[]).await;
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(header(&r, "location"), format!("/ipfs/{}/files/?x=1", s.root));

    let r = send(&app, "GET", &format!("/ipfs/{}/files/", s.root), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "etag").starts_with("\"DirIndex-"));
    let html = String::from_utf8(body(r).await).expect("utf-8");
    assert!(html.contains(&format!("<a href=\"/ipfs/{}/files/a%20b&amp;c.txt\">a b&amp;c.txt</a>", s.root)));
    assert!(html.contains(">hello.txt</a>") && html.contains(">big.bin</a>"));

    let r = send(&app, "GET", &format!("/ipfs/{}/site/", s.root), &[]).await;
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(body(r).await, b"<!doctype html><p>home</p>");
}

#[tokio::test]
async fn trustless_responses_verify() {
    let s = site();
    let app = app(s.source, GatewayConfig::default());
    let r = send(&app, "GET", &format!("/ipfs/{}/files?format=car", s.root), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "application/vnd.ipld.car; version=1; order=dfs; dups=n");
    let car = body(r).await;
    let mut reader = CarReader::new(&car[..]).expect("CAR header");
    assert_eq!(reader.roots(), &[s.root]);
    let mut count = 0;
    while let Some((cid, data)) = reader.next_block().expect("CAR section") {
        btfs_chunker::hash::verify(&cid, &data).expect("every block hashes to its CID");
        count += 1;
    }
    // root, files/, hello.txt (once: dups=n), the big file's root and its four leaves.
    assert_eq!(count, 8);

    let r = send(&app, "GET", &format!("/ipfs/{}", s.root), &[("accept", "application/vnd.ipld.raw")]).await;
    assert_eq!(header(&r, "content-type"), "application/vnd.ipld.raw");
    let raw = body(r).await;
    btfs_chunker::hash::verify(&s.root, &raw).expect("raw block matches");
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let s = site();
    let app = app(s.source, GatewayConfig::default());
    let root = s.root;
    let cases = [
        ("GET", "/ipfs/not-a-cid".to_string(), StatusCode::BAD_REQUEST),
        ("GET", "/ipfs/".to_string(), StatusCode::BAD_REQUEST),
        ("GET", format!("/ipfs/{root}/../etc/passwd"), StatusCode::BAD_REQUEST),
        ("GET", format!("/ipfs/{root}/files/nope"), StatusCode::NOT_FOUND),
        ("GET", format!("/ipfs/{root}/files/hello.txt/deeper"), StatusCode::NOT_FOUND),
        ("GET", format!("/ipfs/{root}?format=zip"), StatusCode::BAD_REQUEST),
        ("GET", format!("/ipfs/{root}?format=car&dag-scope=everything"), StatusCode::BAD_REQUEST),
        ("GET", "/elsewhere".to_string(), StatusCode::NOT_FOUND),
        ("POST", format!("/ipfs/{root}"), StatusCode::METHOD_NOT_ALLOWED),
        ("DELETE", format!("/ipfs/{root}"), StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (method, uri, status) in cases {
        let r = send(&app, method, &uri, &[]).await;
        assert_eq!(r.status(), status, "{method} {uri}");
    }
    let missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let r = send(&app, "GET", &format!("/ipfs/{missing}"), &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let long = format!("/ipfs/{root}/{}", "a".repeat(10_000));
    assert_eq!(send(&app, "GET", &long, &[]).await.status(), StatusCode::URI_TOO_LONG);
}

/// A file node whose children claim more bytes than they hold.
#[tokio::test]
async fn lying_dags_get_502_not_a_panic() {
    let mut source = MemorySource::new();
    let leaf = Block { cid: btfs_chunker::CidParams::V0.cid(0x55, b"abc"), data: b"abc".to_vec() };
    let mut data = unixfs::Data::new(unixfs::DataType::File);
    data.filesize = Some(1000);
    data.blocksizes = vec![1000];
    let node = dagpb::PbNode { links: vec![dagpb::PbLink::new(leaf.cid, "", 3)], data: Some(data.encode()) };
    let bytes = node.encode();
    let cid = btfs_chunker::CidParams::V0.cid(dagpb::CODEC, &bytes);
    add(&mut source, vec![leaf, Block { cid, data: bytes }]);
    let app = app(source, GatewayConfig::default());
    let r = send(&app, "GET", &format!("/ipfs/{cid}"), &[]).await;
    // The size check on the first read catches the lie before any header is sent.
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
}

/// A source whose reads never finish, or fail with internal detail.
struct Stuck;

impl ContentSource for Stuck {
    fn get(&self, _: &Cid, _: Fetch) -> impl Future<Output = Result<(Bytes, Origin), SourceError>> + Send {
        std::future::pending()
    }
}

struct Broken;

impl ContentSource for Broken {
    async fn get(&self, cid: &Cid, _: Fetch) -> Result<(Bytes, Origin), SourceError> {
        Err(SourceError::Failed { cid: *cid, reason: "disk /secret/path exploded".into() })
    }
}

#[tokio::test]
async fn slow_and_failing_sources() {
    let root = site().root;
    let config = GatewayConfig { block_timeout: Duration::from_millis(200), ..GatewayConfig::default() };
    let r = send(&app(Stuck, config), "GET", &format!("/ipfs/{root}"), &[]).await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);

    let r = send(&app(Broken, GatewayConfig::default()), "GET", &format!("/ipfs/{root}"), &[]).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = String::from_utf8(body(r).await).expect("utf-8");
    assert!(!text.contains("secret"), "internal detail leaked: {text}");
}

#[tokio::test]
async fn the_concurrency_limit_refuses_with_429() {
    let s = site();
    let config = GatewayConfig { concurrency: 1, ..GatewayConfig::default() };
    let app = app(s.source, config);
    // A streamed body holds its permit until it is read or dropped.
    let first = send(&app, "GET", &format!("/ipfs/{}/files/big.bin", s.root), &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = send(&app, "GET", &format!("/ipfs/{}/files/hello.txt", s.root), &[]).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&second, header::RETRY_AFTER.as_str()), "1");
    assert_eq!(body(first).await.len(), 1024 * 1024);
    let third = send(&app, "GET", &format!("/ipfs/{}/files/hello.txt", s.root), &[]).await;
    assert_eq!(third.status(), StatusCode::OK);
}

/// A directory of 10 000 entries becomes a HAMT; its listing names every entry, and each resolves.
#[tokio::test]
async fn hamt_directories_list_every_entry() {
    let params = Options::default().resolve().expect("default options");
    let mut source = MemorySource::new();
    let (file, blocks) = import_bytes(&params, b"same bytes in every entry\n");
    add(&mut source, blocks);
    let mut dir = DirectoryBuilder::new();
    for i in 0..10_000 {
        dir.insert(format!("entry-{i:05}.txt"), file).expect("valid name");
    }
    let mut blocks = Vec::new();
    let root = dir.finish(&params.dir, &mut |b| blocks.push(b)).cid;
    assert!(blocks.len() > 2, "10 000 entries must shard into a HAMT");
    add(&mut source, blocks);
    let app = app(source, GatewayConfig::default());
    let r = send(&app, "GET", &format!("/ipfs/{root}/"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = String::from_utf8(body(r).await).expect("utf-8");
    for i in 0..10_000 {
        assert!(html.contains(&format!(">entry-{i:05}.txt</a>")), "entry {i} missing from the listing");
    }
    let r = send(&app, "GET", &format!("/ipfs/{root}/entry-04321.txt"), &[]).await;
    assert_eq!(body(r).await, b"same bytes in every entry\n");
}
