//! The CLI's remote mode against its local mode: one script of commands runs on two copies of the same
//! freshly initialised repo, once with the repo opened by the CLI itself and once through the RPC API
//! served (in this test process) over that repo, and every command must print the same bytes and exit
//! the same way. Only the repo's own path is masked, since the two copies live in different places.
//!
//! The remote run cannot silently fall back to local mode: the server holds the repo's lock, so a
//! local open would fail with "repo is locked", and the script ends with `shutdown`, which only a
//! daemon answers.

use std::fs;
use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use btfs_node::Node;
use btfs_node::rpc::{RpcContext, router};
use tokio_util::sync::CancellationToken;

/// What a command printed and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `btfs <args>` in `cwd` against `repo`, with `stdin` fed in.
fn btfs(cwd: &Path, repo: &Path, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_btfs"))
        .args(args)
        .current_dir(cwd)
        .env("BTFS_PATH", repo)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start btfs");
    let mut input = child.stdin.take().expect("stdin");
    // A command that fails early may not read its input; its exit status says what happened.
    let _ = input.write_all(stdin);
    drop(input);
    let out = child.wait_with_output().expect("wait for btfs");
    let mask = |s: String| s.replace(&repo.display().to_string(), "<REPO>");
    Run {
        ok: out.status.success(),
        stdout: mask(String::from_utf8_lossy(&out.stdout).into_owned()).into_bytes(),
        stderr: mask(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Deterministic, uneven bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

/// The inputs every run adds, in `<work>/in`.
fn write_inputs(work: &Path) {
    let dir = work.join("in/dir");
    fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir");
    fs::write(work.join("in/file.txt"), b"hello world\n").expect("write");
    fs::write(work.join("in/big.bin"), bytes(1, 700_000)).expect("write");
    fs::write(dir.join("a.txt"), b"alpha\n").expect("write");
    fs::write(dir.join(".hidden"), b"hidden\n").expect("write");
    fs::write(dir.join("sub/b.bin"), bytes(2, 300_000)).expect("write");
    fs::write(dir.join("sub/deeper/c.txt"), b"").expect("write");
    fs::write(dir.join("name with spaces+plus%.txt"), b"odd name\n").expect("write");
    std::os::unix::fs::symlink("a.txt", dir.join("link")).expect("symlink");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A step: arguments (with `{name}` replaced by what an earlier step saved), stdin, whether it must
/// succeed, and a name under which to save its trimmed stdout.
struct Step {
    args: &'static str,
    stdin: &'static [u8],
    ok: bool,
    save: Option<&'static str>,
}

const fn ok(args: &'static str) -> Step {
    Step { args, stdin: b"", ok: true, save: None }
}

const fn fails(args: &'static str) -> Step {
    Step { args, stdin: b"", ok: false, save: None }
}

const fn save(args: &'static str, name: &'static str) -> Step {
    Step { args, stdin: b"", ok: true, save: Some(name) }
}

const fn stdin(args: &'static str, input: &'static [u8]) -> Step {
    Step { args, stdin: input, ok: true, save: None }
}

/// The script. Arguments are split on spaces; `{x}` is a value saved by an earlier step.
const SCRIPT: &[Step] = &[
    ok("add in/file.txt"),
    save("add -Q in/big.bin", "big"),
    ok("add -r in/dir"),
    ok("add -r -H in/dir"),
    save("add -r -Q in/dir", "dir"),
    ok("add -q -w in/file.txt in/big.bin"),
    ok("add --cid-version=1 --chunker size-1000 --trickle in/big.bin"),
    ok("add --only-hash --raw-leaves in/big.bin"),
    ok("--enc json add -r in/dir"),
    stdin("add", b"from stdin\n"),
    stdin("add --stdin-name named.txt -w", b"from stdin\n"),
    fails("add in/dir"),
    fails("add in/missing"),
    fails("add --chunker rabin in/file.txt"),
    ok("cat {big}"),
    ok("cat -o 262000 -l 1000 {big}"),
    ok("cat /ipfs/{dir}/a.txt"),
    fails("cat {dir}"),
    fails("cat notacid"),
    ok("ls {dir}"),
    ok("ls -v {dir} {dir}/sub"),
    ok("--enc json ls {dir}"),
    fails("ls /ipfs/{dir}/nope"),
    ok("get {dir} -o out-dir"),
    ok("get /ipfs/{dir}/sub/b.bin -o out-file"),
    fails("get {dir} -o out-dir"),
    ok("pin ls"),
    ok("pin ls -t recursive -q"),
    ok("--enc json pin ls -t direct"),
    ok("pin rm {big}"),
    fails("pin rm {big}"),
    ok("pin add -r=false {big}"),
    ok("pin ls -t direct"),
    ok("pin rm {big}"),
    stdin("block put", b"hello world"),
    save("block put --cid-codec dag-cbor --mhtype blake3 --pin", "cbor"),
    ok("block get bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
    ok("block stat bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
    fails("block put --cid-codec nope"),
    fails("block rm {cbor}"),
    ok("block rm bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
    fails("block rm bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
    ok("dag export {dir}"),
    fails("dag import in/file.txt"),
    ok("repo verify"),
    stdin("add --pin=false", b"not pinned\n"),
    ok("repo gc"),
    ok("repo gc -q"),
    ok("repo stat"),
    ok("--enc json repo stat"),
    ok("config Datastore.StorageMax"),
    ok("config Datastore.StorageMax 20GB"),
    ok("config Datastore.StorageMax"),
    ok("config --bool Discovery.MDNS.Enabled true"),
    ok(
        "config --json Bootstrap [\"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\"]",
    ),
    ok("config Bootstrap"),
    fails("config --json Bootstrap [unclosed"),
    fails("config Addresses.Swarm 7"),
    fails("config No.Such"),
    ok("config show"),
    ok("repo stat"),
    ok("id"),
];

/// Runs the script in `work` against `repo`; returns every step's run.
fn run_script(work: &Path, repo: &Path) -> Vec<(String, Run)> {
    let mut saved: Vec<(&str, String)> = Vec::new();
    let mut runs = Vec::new();
    for step in SCRIPT {
        let mut line = step.args.to_string();
        for (k, v) in &saved {
            line = line.replace(&format!("{{{k}}}"), v);
        }
        let args: Vec<&str> = line.split(' ').collect();
        let run = btfs(work, repo, &args, step.stdin);
        assert_eq!(run.ok, step.ok, "`btfs {line}` in {}: {}", work.display(), run.stderr);
        if let Some(name) = step.save {
            saved.push((name, String::from_utf8_lossy(&run.stdout).trim().to_string()));
        }
        runs.push((line, run));
    }
    // `dag import` of the exported CAR (through stdin) into the same node.
    let dir = &saved.iter().find(|(k, _)| *k == "dir").expect("dir saved").1;
    let car = btfs(work, repo, &["dag", "export", dir], b"").stdout;
    runs.push(("dag import -".into(), btfs(work, repo, &["dag", "import", "-"], &car)));
    runs
}

/// Everything under `root`: relative path → file bytes, symlink target, or a directory marker.
fn tree(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).expect("stat");
        let rel = p.strip_prefix(root).expect("under root").to_path_buf();
        if meta.file_type().is_symlink() {
            out.push((rel, format!("-> {}", fs::read_link(&p).expect("readlink").display())));
        } else if meta.is_dir() {
            out.push((rel, "dir".into()));
            for e in fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
        } else {
            out.push((rel, format!("{:?}", fs::read(&p).expect("read"))));
        }
    }
    out.sort();
    out
}

struct Server {
    rt: tokio::runtime::Runtime,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serves the API over the repo at `repo` on a loopback port and writes `<repo>/api`, as the daemon will.
fn serve(repo: &Path) -> Server {
    let node = Node::open(repo).expect("open the repo for the server");
    let ctx = RpcContext { node: Arc::new(node), shutdown: CancellationToken::new() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let stop = ctx.shutdown.clone();
    let task = rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router(ctx)).with_graceful_shutdown(stop.cancelled_owned()).await
    });
    fs::write(repo.join("api"), format!("/ip4/127.0.0.1/tcp/{port}")).expect("write the api file");
    Server { rt, task }
}

#[test]
fn remote_mode_prints_what_local_mode_prints() {
    let root = tempfile::tempdir().expect("tempdir");
    let pristine = root.path().join("pristine");
    let init = btfs(root.path(), &pristine, &["init", "--profile", "test"], b"");
    assert!(init.ok, "{}", init.stderr);
    let (local, remote) = (root.path().join("local"), root.path().join("remote"));
    for work in [&local, &remote] {
        copy_dir(&pristine, &work.join("repo"));
        write_inputs(work);
    }

    let local_runs = run_script(&local, &local.join("repo"));
    let local_shutdown = btfs(&local, &local.join("repo"), &["shutdown"], b"");
    assert_eq!((local_shutdown.ok, local_shutdown.stderr.as_str()), (false, "Error: no daemon running\n"));

    let server = serve(&remote.join("repo"));
    // Without the api file the CLI would open the repo itself, which the server holds.
    fs::rename(remote.join("repo/api"), remote.join("api.aside")).expect("move api aside");
    let direct = btfs(&remote, &remote.join("repo"), &["repo", "stat"], b"");
    assert!(!direct.ok && direct.stderr.contains("locked"), "{}", direct.stderr);
    fs::rename(remote.join("api.aside"), remote.join("repo/api")).expect("put api back");
    let remote_runs = run_script(&remote, &remote.join("repo"));
    if std::env::var_os("BTFS_TEST_SHOW").is_some() {
        for (line, run) in &remote_runs {
            eprintln!("$ btfs {line}\n{}{}", String::from_utf8_lossy(&run.stdout), run.stderr);
        }
    }
    let stop = btfs(&remote, &remote.join("repo"), &["shutdown"], b"");
    assert!(stop.ok, "shutdown through the API: {}", stop.stderr);
    let served = server.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server.task).await });
    assert!(matches!(served, Ok(Ok(Ok(())))), "the server stops on shutdown: {served:?}");

    assert_eq!(local_runs.len(), remote_runs.len());
    for ((line, l), (_, r)) in local_runs.iter().zip(&remote_runs) {
        // `repo stat`'s RepoSize is the store's size on disk, which RocksDB does not make identical.
        if line.contains("repo stat") {
            let strip = |s: &[u8]| {
                String::from_utf8_lossy(s)
                    .lines()
                    .filter(|l| !l.contains("RepoSize"))
                    .map(|l| l.split(",\"RepoSize\"").next().unwrap_or(l).to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&l.stdout), strip(&r.stdout), "btfs {line}");
            continue;
        }
        assert_eq!(
            (l.ok, String::from_utf8_lossy(&l.stdout), &l.stderr),
            (r.ok, String::from_utf8_lossy(&r.stdout), &r.stderr),
            "btfs {line}: local (left) and remote (right) differ"
        );
    }
    assert_eq!(tree(&local.join("out-dir")), tree(&remote.join("out-dir")));
    assert_eq!(tree(&local.join("out-file")), tree(&remote.join("out-file")));
    assert!(tree(&local.join("out-dir")).iter().any(|(p, v)| p.ends_with("link") && v == "-> a.txt"));
}

#[test]
fn a_stale_api_file_falls_back_to_the_repo() {
    let root = tempfile::tempdir().expect("tempdir");
    let repo = root.path().join("repo");
    assert!(btfs(root.path(), &repo, &["init", "--profile", "test"], b"").ok);
    // A port nothing listens on: bind one, note it, close it.
    let port = StdListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    fs::write(repo.join("api"), format!("/ip4/127.0.0.1/tcp/{port}")).expect("write api");
    let added = btfs(root.path(), &repo, &["add", "-Q"], b"hello world\n");
    assert!(added.ok, "{}", added.stderr);
    assert_eq!(String::from_utf8_lossy(&added.stdout), "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o\n");
    let shutdown = btfs(root.path(), &repo, &["shutdown"], b"");
    assert_eq!(shutdown.stderr, "Error: no daemon running\n");
    // A file that does not hold an address is an error, not a silent fallback.
    fs::write(repo.join("api"), "nonsense").expect("write api");
    let r = btfs(root.path(), &repo, &["cat", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"], b"");
    assert!(!r.ok && r.stderr.contains("not a TCP multiaddr"), "{}", r.stderr);
}
