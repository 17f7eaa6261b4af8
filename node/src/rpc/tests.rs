//! In-process tests of the API router: requests go through `tower::ServiceExt::oneshot` into the same
//! `Router` the daemon serves, over a node on a temporary repo. Expected shapes and texts are kubo's (from
//! go-ipfs-cmds and kubo's command definitions), CIDs are kubo's published ones or come from the local
//! `add`, and the tar is read back by GNU tar.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{RpcContext, router};
use crate::add::{AddEvents, AddInput, AddOptions, Added};
use crate::api::Node;
use crate::repo::InitProfile;

/// `echo "hello world" | ipfs add`: kubo's CID for these bytes (CIDv0, one dag-pb leaf).
const HELLO: &[u8] = b"hello world\n";
const HELLO_CID: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
/// The API's own origin in these tests: requests carry `Host: 127.0.0.1:5001`.
const HOST: &str = "127.0.0.1:5001";

struct Api {
    _dir: tempfile::TempDir,
    ctx: RpcContext,
    app: Router,
}

fn api() -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::init(&dir.path().join("repo"), InitProfile::Test).expect("init");
    let ctx = RpcContext { node: Arc::new(node), shutdown: CancellationToken::new() };
    let app = router(ctx.clone());
    Api { _dir: dir, ctx, app }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The NDJSON lines of a streamed answer.
    fn lines(&self) -> Vec<Value> {
        self.text().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts kubo's JSON error shape and returns the message.
    fn error(&self, status: StatusCode, code: u64) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        assert_eq!(v["Code"], code, "{v}");
        assert_eq!(v["Type"], "error", "{v}");
        v["Message"].as_str().expect("a message").to_string()
    }
}

impl Api {
    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.expect("the router is infallible");
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("a complete body");
        Reply { status: parts.status, headers: parts.headers, body }
    }

    async fn post(&self, uri: &str) -> Reply {
        self.send(request("POST", uri).body(Body::empty()).expect("request")).await
    }

    async fn upload(&self, uri: &str, parts: &[Part<'_>]) -> Reply {
        let (content_type, body) = multipart(parts);
        let req = request("POST", uri).header("content-type", content_type).body(Body::from(body)).expect("request");
        self.send(req).await
    }

    async fn add_hello(&self) -> String {
        let r = self.upload("/api/v0/add", &[file("hello.txt", HELLO)]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.lines()[0]["Hash"].as_str().expect("hash").to_string()
    }
}

fn request(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri).header("host", HOST)
}

/// One multipart part: (file name, content type, body).
type Part<'a> = (&'a str, &'a str, &'a [u8]);

fn file<'a>(name: &'a str, data: &'a [u8]) -> Part<'a> {
    (name, "application/octet-stream", data)
}

fn dir(name: &str) -> Part<'_> {
    (name, "application/x-directory", b"")
}

/// A body in kubo's multipart layout, names escaped as Go's `url.QueryEscape` does for `/`.
fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "Xb0uNdArYx";
    let mut body = Vec::new();
    for (name, content_type, data) in parts {
        let escaped = name.replace('/', "%2F");
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{escaped}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .expect("write");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").expect("write");
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Deterministic bytes (a linear congruential generator; the values only need to be uneven).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

#[derive(Default)]
struct Collect(Vec<Added>);

impl AddEvents for Collect {
    fn added(&mut self, entry: &Added) {
        self.0.push(entry.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_over_multipart_then_cat_gives_the_bytes_back() {
    let api = api();
    let r = api.upload("/api/v0/add", &[file("hello.txt", HELLO)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-chunked-output"), Some("1"));
    assert_eq!(r.lines(), vec![json!({"Name": "hello.txt", "Hash": HELLO_CID, "Size": "20"})]);

    let r = api.post(&format!("/api/v0/cat?arg={HELLO_CID}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], HELLO);
    assert_eq!(r.header("x-stream-output"), Some("1"));
    assert_eq!(r.header("x-content-length"), Some("12"));

    // Several chunks, through every bounded channel on both sides; the CID must be the one a local add
    // of the same bytes gives.
    let big = bytes(7, 3 * 1024 * 1024 + 17);
    let r = api.upload("/api/v0/add?raw-leaves=true&chunker=size-65536", &[file("big", &big)]).await;
    let cid = r.lines()[0]["Hash"].as_str().expect("hash").to_string();
    let opts = AddOptions {
        import: btfs_chunker::import::Options {
            raw_leaves: Some(true),
            chunk_size: btfs_chunker::import::ChunkSize::new(65536),
            ..Default::default()
        },
        only_hash: true,
        ..Default::default()
    };
    let input = AddInput::Stream { name: None, reader: Box::new(std::io::Cursor::new(big.clone())) };
    let local = api.ctx.node.add(vec![input], &opts, &mut Collect::default()).expect("local add");
    assert_eq!(cid, local[0].cid.to_string());
    let r = api.post(&format!("/api/v1/cat?arg=/ipfs/{cid}")).await;
    assert_eq!(r.body.len(), big.len());
    assert!(r.body[..] == big[..], "cat returns the uploaded bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_flags_are_kubos() {
    let api = api();
    // `--cid-version=1` implies raw leaves: kubo prints the raw CIDv1 of the bytes for a one-chunk file.
    let r = api.upload("/api/v0/add?cid-version=1&pin=false", &[file("h", b"hello world")]).await;
    assert_eq!(r.lines()[0]["Hash"], "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
    assert_eq!(api.post("/api/v0/pin/ls").await.json(), json!({"Keys": {}}), "pin=false pins nothing");
    // only-hash stores nothing: the block is not there afterwards.
    let r = api.upload("/api/v0/add?only-hash=true", &[file("h", b"only hashed")]).await;
    let cid = r.lines()[0]["Hash"].as_str().expect("hash").to_string();
    api.post(&format!("/api/v0/block/stat?arg={cid}")).await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    // progress adds `Bytes` lines before the entry; quieter does not change what the API sends.
    let r = api.upload("/api/v0/add?progress=true&quieter=true", &[file("p", HELLO)]).await;
    let lines = r.lines();
    assert_eq!(lines.first(), Some(&json!({"Name": "p", "Bytes": 12})), "{lines:?}");
    assert_eq!(lines.last().map(|l| &l["Hash"]), Some(&json!(HELLO_CID)));
    // silent sends nothing at all.
    assert!(api.upload("/api/v0/add?silent=true", &[file("s", HELLO)]).await.body.is_empty());
    // A bad option is refused before the upload is read.
    let msg =
        api.upload("/api/v0/add?chunker=rabin", &[file("x", HELLO)]).await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert!(msg.contains("rabin"), "{msg}");
    let msg = api.upload("/api/v0/add?pin=maybe", &[file("x", HELLO)]).await.error(StatusCode::BAD_REQUEST, 1);
    assert!(msg.contains("maybe"), "{msg}");
    // A multipart body without parts adds nothing, which is an error as in kubo.
    let msg = api.upload("/api/v0/add", &[]).await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert_eq!(msg, "nothing to add");
    // No multipart body: kubo's missing file argument.
    let msg = api.post("/api/v0/add").await.error(StatusCode::BAD_REQUEST, 1);
    assert_eq!(msg, "file argument 'path' is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_cat_cuts_like_a_slice() {
    let api = api();
    let data = bytes(3, 700_000);
    let r = api.upload("/api/v0/add", &[file("f", &data)]).await;
    let cid = r.lines()[0]["Hash"].as_str().expect("hash").to_string();
    const RANGES: &[(u64, Option<u64>)] = &[
        (0, None),
        (1, Some(1)),
        (262_143, Some(2)),
        (262_144, None),
        (699_999, Some(10)),
        (700_000, None),
        (800_000, Some(5)),
        (5, Some(0)),
    ];
    for &(offset, length) in RANGES {
        let mut uri = format!("/api/v0/cat?arg={cid}&offset={offset}");
        if let Some(l) = length {
            uri.push_str(&format!("&length={l}"));
        }
        let r = api.post(&uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
        let start = (offset as usize).min(data.len());
        let end = length.map_or(data.len(), |l| (start + l as usize).min(data.len()));
        assert!(r.body[..] == data[start..end], "{uri}: {} bytes", r.body.len());
        assert_eq!(r.header("x-content-length"), Some((end - start).to_string().as_str()), "{uri}");
    }
    // kubo's short option names and its refusal of negative values.
    let r = api.post(&format!("/api/v0/cat?arg={cid}&o=2&l=3")).await;
    assert!(r.body[..] == data[2..5]);
    let msg = api.post(&format!("/api/v0/cat?arg={cid}&offset=-1")).await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert_eq!(msg, "cannot specify negative offset");
    // Two paths are one stream, as kubo's cat concatenates them; the offset runs across both.
    let hello = api.add_hello().await;
    let r = api.post(&format!("/api/v0/cat?arg={hello}&arg={hello}&offset=6")).await;
    assert_eq!(&r.body[..], b"world\nhello world\n");
}

/// The tree of `dir_parts`, written to disk for the local add to compare with.
fn write_tree(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("d/sub")).expect("mkdir");
    std::fs::create_dir_all(root.join("d/implicit")).expect("mkdir");
    std::fs::write(root.join("d/a.txt"), b"a\n").expect("write");
    std::fs::write(root.join("d/implicit/c.txt"), b"c\n").expect("write");
    std::fs::write(root.join("d/sub/b.txt"), bytes(5, 300_000)).expect("write");
    std::os::unix::fs::symlink("a.txt", root.join("d/link")).expect("symlink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_upload_builds_the_tree_a_local_add_builds() {
    let api = api();
    let big = bytes(5, 300_000);
    // `d/implicit` has no part of its own: kubo creates such directories implicitly.
    let parts = [
        dir("d"),
        file("d/a.txt", b"a\n"),
        file("d/implicit/c.txt", b"c\n"),
        ("d/link", "application/symlink", b"a.txt"),
        dir("d/sub"),
        file("d/sub/b.txt", &big),
    ];
    let r = api.upload("/api/v0/add", &parts).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let remote: Vec<(String, String)> = r
        .lines()
        .iter()
        .map(|l| (l["Name"].as_str().expect("name").into(), l["Hash"].as_str().expect("hash").into()))
        .collect();

    let disk = tempfile::tempdir().expect("tempdir");
    write_tree(disk.path());
    let opts = AddOptions { recursive: true, only_hash: true, ..Default::default() };
    let mut local = Collect::default();
    api.ctx.node.add(vec![AddInput::Path(disk.path().join("d"))], &opts, &mut local).expect("local add");
    let local: Vec<(String, String)> = local.0.iter().map(|a| (a.name.clone(), a.cid.to_string())).collect();
    assert_eq!(remote, local, "same entries, same CIDs, same order (files, then directories innermost first)");
    assert_eq!(remote.last().map(|(n, _)| n.as_str()), Some("d"));

    // The tree reads back: ls shows kubo's link shape, the symlink with its target.
    let root = &remote.last().expect("root").1;
    let v = api.post(&format!("/api/v0/ls?arg={root}")).await.json();
    let links = v["Objects"][0]["Links"].as_array().expect("links").clone();
    assert_eq!(v["Objects"][0]["Hash"], json!(root));
    let names: Vec<&str> = links.iter().map(|l| l["Name"].as_str().expect("name")).collect();
    assert_eq!(names, ["a.txt", "implicit", "link", "sub"]);
    assert_eq!(links[0], json!({"Name": "a.txt", "Hash": links[0]["Hash"], "Size": 2, "Type": 2, "Target": ""}));
    assert_eq!(links[1]["Type"], 1);
    assert_eq!((&links[2]["Type"], &links[2]["Target"]), (&json!(4), &json!("a.txt")));
    // Streamed, kubo sends one object per link.
    let streamed = api.post(&format!("/api/v0/ls?arg={root}&stream=true")).await.lines();
    assert_eq!(streamed.len(), 4);
    assert_eq!(streamed[3]["Objects"][0]["Links"][0]["Name"], "sub");

    // Parts in another order than a disk walk: the directories still come as kubo lists them.
    let r = api.upload("/api/v0/add", &[dir("t"), dir("t/z"), file("t/z/f", b"f"), dir("t/a")]).await;
    let names: Vec<String> = r.lines().iter().map(|l| l["Name"].as_str().expect("name").to_string()).collect();
    assert_eq!(names, ["t/z/f", "t/a", "t/z", "t"]);

    // A path that climbs out of the upload is refused, and so is a duplicate name in a wrapped add.
    let msg = api.upload("/api/v0/add", &[file("../x", b"x")]).await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert!(msg.contains("../x"), "{msg}");
    // That one fails after both entries were sent: the response breaks off, unless the client asked for
    // the error as a last line.
    let (content_type, body) = multipart(&[file("same", b"1"), file("same", b"2")]);
    let wrapped = |inline: bool| {
        let mut req = request("POST", "/api/v0/add?wrap-with-directory=true").header("content-type", &content_type);
        if inline {
            req = req.header(super::INLINE_ERRORS_HEADER, "1");
        }
        req.body(Body::from(body.clone())).expect("request")
    };
    let resp = api.app.clone().oneshot(wrapped(false)).await.expect("router");
    assert!(axum::body::to_bytes(resp.into_body(), usize::MAX).await.is_err(), "a late error aborts the body");
    let lines = api.send(wrapped(true)).await.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[2],
        json!({"Message": "directory already has an entry named \"same\"", "Code": 0, "Type": "error"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_sends_a_tar_that_gnu_tar_unpacks() {
    let api = api();
    let big = bytes(9, 600_000);
    let long = "n".repeat(120);
    let long_path = format!("top/sub/{long}");
    let parts = [
        dir("top"),
        file("top/a.txt", b"alpha\n"),
        ("top/link", "application/symlink", b"a.txt"),
        dir("top/sub"),
        file("top/sub/big.bin", &big),
        file(&long_path, b"long name\n"),
    ];
    let r = api.upload("/api/v0/add", &parts).await;
    let root = r.lines().last().expect("root")["Hash"].as_str().expect("hash").to_string();
    let r = api.post(&format!("/api/v0/get?arg=/ipfs/{root}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-tar"));

    let out = tempfile::tempdir().expect("tempdir");
    let tar = out.path().join("get.tar");
    std::fs::write(&tar, &r.body).expect("write");
    let status =
        std::process::Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(out.path()).status().expect("run GNU tar");
    assert!(status.success());
    let top = out.path().join(&root);
    assert_eq!(std::fs::read(top.join("a.txt")).expect("a.txt"), b"alpha\n");
    assert_eq!(std::fs::read(top.join("sub/big.bin")).expect("big.bin"), big);
    assert_eq!(std::fs::read(top.join("sub").join(&long)).expect("long"), b"long name\n");
    assert_eq!(std::fs::read_link(top.join("link")).expect("link"), std::path::Path::new("a.txt"));

    // A single file is one entry named by the last path segment, and its size is announced.
    let r = api.post(&format!("/api/v0/get?arg=/ipfs/{root}/a.txt")).await;
    assert_eq!(r.header("x-content-length"), Some("6"));
    let listing = std::process::Command::new("tar")
        .arg("-t")
        .arg("-f")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(&r.body)?;
            c.wait_with_output()
        })
        .expect("run GNU tar");
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "a.txt\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_are_listed_in_kubos_shapes() {
    let api = api();
    let hello = api.add_hello().await;
    let big = bytes(1, 300_000);
    let r = api.upload("/api/v0/add", &[file("big", &big)]).await;
    let big_cid = r.lines()[0]["Hash"].as_str().expect("hash").to_string();

    let keys = api.post("/api/v0/pin/ls?type=recursive").await.json();
    let want: HashMap<&str, Value> =
        [&hello, &big_cid].into_iter().map(|c| (c.as_str(), json!({"Type": "recursive", "Name": ""}))).collect();
    assert_eq!(keys, json!({ "Keys": want }));

    let r = api.post("/api/v0/pin/ls?type=recursive&stream=true").await;
    assert_eq!(r.header("x-chunked-output"), Some("1"));
    let mut streamed = r.lines();
    streamed.sort_by_key(|v| v["Cid"].as_str().map(str::to_string));
    let mut want = vec![json!({"Cid": hello, "Type": "recursive"}), json!({"Cid": big_cid, "Type": "recursive"})];
    want.sort_by_key(|v| v["Cid"].as_str().map(str::to_string));
    assert_eq!(streamed, want);

    // The two 256 KiB chunks of the big file are pinned indirectly.
    let indirect = api.post("/api/v0/pin/ls?type=indirect").await.json();
    let indirect = indirect["Keys"].as_object().expect("keys");
    assert_eq!(indirect.len(), 2);
    assert!(indirect.values().all(|v| v["Type"] == "indirect"));

    // With arguments: the pin of each, or kubo's error for one that is not pinned.
    let v = api.post(&format!("/api/v0/pin/ls?arg={hello}")).await.json();
    assert_eq!(v, json!({"Keys": {hello.as_str(): {"Type": "recursive", "Name": ""}}}));
    api.post(&format!("/api/v0/pin/rm?arg={hello}")).await;
    let msg = api.post(&format!("/api/v0/pin/ls?arg={hello}")).await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert_eq!(msg, format!("path '{hello}' is not pinned"));
    let msg = api.post("/api/v0/pin/ls?type=sideways").await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert_eq!(msg, "invalid type 'sideways', must be one of {direct, indirect, recursive, all}");

    // pin add and rm answer `{"Pins": [..]}`.
    let v = api.post(&format!("/api/v0/pin/add?arg=/ipfs/{hello}&recursive=false")).await.json();
    assert_eq!(v, json!({"Pins": [hello]}));
    assert_eq!(api.post(&format!("/api/v0/pin/ls?arg={hello}")).await.json()["Keys"][&hello]["Type"], "direct");
    let v = api.post(&format!("/api/v0/pin/rm?arg={hello}")).await.json();
    assert_eq!(v, json!({"Pins": [hello]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_get_kubos_plain_404() {
    let api = api();
    for uri in ["/api/v0/nope", "/api/v0/pin/nope", "/api/v1/nope", "/somewhere/else"] {
        let r = api.post(uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(r.text(), "404 page not found\n", "{uri}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_argument_is_a_400_with_code_1() {
    let api = api();
    for (cmd, arg) in [
        ("cat", "ipfs-path"),
        ("ls", "ipfs-path"),
        ("get", "ipfs-path"),
        ("block/get", "cid"),
        ("dag/export", "root"),
        ("config", "key"),
    ] {
        let msg = api.post(&format!("/api/v0/{cmd}")).await.error(StatusCode::BAD_REQUEST, 1);
        assert_eq!(msg, format!("argument {arg:?} is required"), "{cmd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cid_is_a_failed_command_as_in_kubo() {
    let api = api();
    // kubo parses paths inside the command, so a bad one is a 500 with code 0 naming it.
    for uri in ["/api/v0/cat?arg=notacid", "/api/v0/block/get?arg=notacid", "/api/v0/pin/add?arg=/ipfs/notacid"] {
        let msg = api.post(uri).await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
        assert!(msg.contains("notacid"), "{uri}: {msg}");
    }
    // A valid CID that is not here names the block.
    let absent = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
    let msg = api.post(&format!("/api/v0/block/get?arg={absent}")).await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert_eq!(msg, format!("block {absent} not found in the local store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_other_than_post_are_refused_with_405() {
    let api = api();
    for (method, uri) in [
        ("GET", "/api/v0/version"),
        ("GET", "/api/v0/nope"),
        ("PUT", "/api/v0/cat?arg=x"),
        ("HEAD", "/api/v1/id"),
        ("DELETE", "/api/v0/pin/rm"),
    ] {
        let r = api.send(request(method, uri).body(Body::empty()).expect("request")).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        if method != "HEAD" {
            assert_eq!(r.text(), "405 - Method Not Allowed\n");
        }
        assert_eq!(r.header("allow"), Some("OPTIONS, POST"));
    }
    let r = api.send(request("OPTIONS", "/api/v0/version").body(Body::empty()).expect("request")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_browser_requests_are_forbidden() {
    let api = api();
    let with = |name: &'static str, value: &str| {
        request("POST", "/api/v0/version").header(name, value).body(Body::empty()).expect("request")
    };
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "http://127.0.0.1:5002"),
        ("origin", "null"),
        ("referer", "http://evil.example/page"),
        ("referer", "not a url"),
    ] {
        let r = api.send(with(name, value)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {value}");
        assert_eq!(r.text(), "403 - Forbidden\n");
    }
    // The API's own origin, on any loopback name, passes; so does a request without either header.
    for (name, value) in [
        ("origin", "http://127.0.0.1:5001"),
        ("origin", "http://localhost:5001"),
        ("referer", "http://[::1]:5001/webui/"),
    ] {
        let r = api.send(with(name, value)).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {value}: {}", r.text());
    }
    assert_eq!(api.post("/api/v0/version").await.status, StatusCode::OK);
    // An origin listed in the config is let in, and told so.
    let r = api.post("/api/v0/config?arg=API.HTTPHeaders.Access-Control-Allow-Origin&arg=%5B%22https%3A%2F%2Fapp.example%22%5D&json=true").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = api.send(with("origin", "https://app.example")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(api.send(with("origin", "http://evil.example")).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_and_cars_round_trip() {
    let api = api();
    let r = api.upload("/api/v0/block/put", &[file("", b"hello world")]).await;
    // kubo's `block put` of "hello world": a raw sha2-256 CIDv1.
    let raw = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
    assert_eq!(r.lines(), vec![json!({"Key": raw, "Size": 11})]);
    assert_eq!(api.post(&format!("/api/v0/block/stat?arg={raw}")).await.json(), json!({"Key": raw, "Size": 11}));
    assert_eq!(&api.post(&format!("/api/v0/block/get?arg={raw}")).await.body[..], b"hello world");
    assert_eq!(api.post(&format!("/api/v0/block/rm?arg={raw}")).await.lines(), vec![json!({"Hash": raw})]);
    let again = api.post(&format!("/api/v0/block/rm?arg={raw}")).await.lines();
    assert_eq!(again[0]["Error"], format!("block {raw} not found in the local store"));
    assert!(api.post(&format!("/api/v0/block/rm?arg={raw}&force=true")).await.body.is_empty());
    let big = vec![0u8; crate::blocks::MAX_BLOCK_SIZE + 1];
    let msg = api.upload("/api/v0/block/put", &[file("", &big)]).await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert!(msg.contains("limit"), "{msg}");

    // A DAG exported as a CAR imports into another node, which then serves the same bytes.
    let data = bytes(11, 600_000);
    let r = api.upload("/api/v0/add", &[file("f", &data)]).await;
    let cid = r.lines()[0]["Hash"].as_str().expect("hash").to_string();
    let car = api.post(&format!("/api/v0/dag/export?arg={cid}")).await;
    assert_eq!(car.header("content-type"), Some("application/vnd.ipld.car"));
    let other = self::api();
    let r = other.upload("/api/v0/dag/import?stats=true", &[file("x.car", &car.body)]).await;
    assert_eq!(
        r.lines(),
        vec![
            json!({"Root": {"Cid": {"/": cid}, "PinErrorMsg": ""}}),
            json!({"Stats": {"BlockCount": 4, "BlockBytesCount": r.lines()[1]["Stats"]["BlockBytesCount"]}}),
        ]
    );
    assert!(other.post(&format!("/api/v0/cat?arg={cid}")).await.body[..] == data[..]);
    let msg = other
        .upload("/api/v0/dag/import", &[file("x.car", b"not a car")])
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert!(msg.starts_with("invalid CAR file"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_config_id_version_and_shutdown() {
    let api = api();
    let hello = api.add_hello().await;
    let stat = api.post("/api/v0/repo/stat").await.json();
    assert_eq!(stat["NumObjects"], 1);
    assert_eq!(stat["StorageMax"], 10_000_000_000u64, "10GB, kubo's default, in bytes");
    assert_eq!(stat["Version"], "fs-repo@1");
    assert_eq!(
        api.post("/api/v0/repo/verify").await.lines().last(),
        Some(&json!({"Msg": "verify complete, all blocks validated.", "Progress": 0}))
    );
    assert!(api.post("/api/v0/repo/gc").await.body.is_empty(), "everything is pinned");
    api.post(&format!("/api/v0/pin/rm?arg={hello}")).await;
    let gc = api.post("/api/v0/repo/gc").await.lines();
    assert_eq!(gc.len(), 1);
    assert!(gc[0]["Key"]["/"].is_string(), "kubo's IPLD link shape: {}", gc[0]);

    assert_eq!(
        api.post("/api/v0/config?arg=Datastore.StorageMax&arg=20GB").await.json(),
        json!({"Key": "Datastore.StorageMax", "Value": "20GB"})
    );
    assert_eq!(api.post("/api/v0/config?arg=Datastore.StorageMax").await.json()["Value"], "20GB");
    assert_eq!(api.post("/api/v0/repo/stat?size-only=true").await.json()["StorageMax"], 20_000_000_000u64);
    assert_eq!(api.post("/api/v0/config?arg=Discovery.MDNS.Enabled&arg=true&bool=true").await.json()["Value"], true);
    assert_eq!(api.post("/api/v0/config/show").await.json()["Discovery"]["MDNS"]["Enabled"], true);
    // The change is on disk: a fresh read of the file sees it.
    let on_disk = crate::repo::ConfigFile::load(&api.ctx.node.repo().path().join("config")).expect("load");
    assert_eq!(on_disk.typed().datastore.storage_max, "20GB");
    let msg = api
        .post("/api/v0/config?arg=Addresses.Swarm&arg=7&json=true")
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR, 0);
    assert!(msg.starts_with("config key \"Addresses.Swarm\""), "{msg}");
    api.post("/api/v0/config?arg=No.Such.Key").await.error(StatusCode::INTERNAL_SERVER_ERROR, 0);

    let id = api.post("/api/v0/id").await.json();
    assert_eq!(id["ID"], api.ctx.node.id().id);
    assert!(id["PublicKey"].is_string() && id["Addresses"].is_array() && id["AgentVersion"].is_string());
    let v = api.post("/api/v0/version").await.json();
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["Repo"], "1");

    assert!(!api.ctx.shutdown.is_cancelled());
    assert_eq!(api.post("/api/v0/shutdown").await.status, StatusCode::OK);
    assert!(api.ctx.shutdown.is_cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_after_output_began_aborts_the_stream() {
    let api = api();
    let data = bytes(13, 3 * 262_144);
    let r = api.upload("/api/v0/add?raw-leaves=true", &[file("f", &data)]).await;
    let cid = r.lines()[0]["Hash"].as_str().expect("hash").to_string();
    // Lose the last chunk: cat starts fine, then finds the block missing.
    let ls = api.post(&format!("/api/v0/ls?arg={cid}")).await.json();
    let last = ls["Objects"][0]["Links"][2]["Hash"].as_str().expect("chunk").to_string();
    let last: btfs_chunker::Cid = last.parse().expect("cid");
    api.ctx.node.repo().store().delete_many([last.hash()]).expect("delete");
    let resp = api
        .app
        .clone()
        .oneshot(request("POST", &format!("/api/v0/cat?arg={cid}")).body(Body::empty()).expect("request"))
        .await
        .expect("router");
    assert_eq!(resp.status(), StatusCode::OK, "the size is known before the stream starts");
    assert!(axum::body::to_bytes(resp.into_body(), usize::MAX).await.is_err(), "the body must not end cleanly");
}

/// A `repo gc` that arrives while an `add` is under way waits for it: otherwise it would delete the
/// blocks the add has written but not pinned yet, and the add would then pin a DAG with holes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_waits_for_an_add_in_progress() {
    let api = api();
    // Past the importer's 8 MiB write batch, so blocks are in the store while the upload stalls.
    let data = bytes(21, 12 * 1024 * 1024);
    let (content_type, body) = multipart(&[file("f", &data)]);
    let body = Bytes::from(body);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let req = request("POST", "/api/v0/add?raw-leaves=true")
        .header("content-type", content_type)
        .body(Body::from_stream(stream))
        .expect("request");
    let add = tokio::spawn(api.app.clone().oneshot(req));
    let stall_at = body.len() - 2 * 1024 * 1024;
    for at in (0..stall_at).step_by(64 * 1024) {
        tx.send(Ok(body.slice(at..(at + 64 * 1024).min(stall_at)))).await.expect("send");
    }
    // Let the importer write its first batch, then ask for a gc.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let gc =
        tokio::spawn(api.app.clone().oneshot(request("POST", "/api/v0/repo/gc").body(Body::empty()).expect("request")));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!gc.is_finished(), "gc ran while the add was under way");
    tx.send(Ok(body.slice(stall_at..))).await.expect("send");
    drop(tx);

    let wait = std::time::Duration::from_secs(30);
    let resp = tokio::time::timeout(wait, add).await.expect("the add finishes").expect("task").expect("router");
    let lines = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    let line: Value = serde_json::from_slice(&lines).expect("one JSON line");
    let cid = line["Hash"].as_str().expect("hash").to_string();
    let resp = tokio::time::timeout(wait, gc).await.expect("gc finishes").expect("task").expect("router");
    let removed = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    assert!(removed.is_empty(), "the add pinned everything it wrote: {}", String::from_utf8_lossy(&removed));
    let r = api.post(&format!("/api/v0/cat?arg={cid}")).await;
    assert!(r.body[..] == data[..], "the pinned DAG is whole");
}
