//! kubo's own JavaScript RPC client (`kubo-rpc-client`, installed in `tests/js` by `scripts/setup.sh`)
//! against the API router, served in-process over a temporary repo: `tests/js/rpc-client-all.mjs` runs every
//! command btfs serves through the client and fails at the first answer the client does not take.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use btfs_node::Node;
use btfs_node::repo::InitProfile;
use btfs_node::rpc::{RpcContext, router};
use tokio_util::sync::CancellationToken;

#[test]
fn kubo_rpc_client_takes_every_answer() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/js");
    assert!(
        js.join("node_modules/kubo-rpc-client").is_dir(),
        "kubo-rpc-client is not installed in {}: run scripts/setup.sh",
        js.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::init(&dir.path().join("repo"), InitProfile::Test).expect("init");
    let ctx = RpcContext { node: Arc::new(node), shutdown: CancellationToken::new() };
    let stop = ctx.shutdown.clone();
    let shutdown = ctx.shutdown.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let server = rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router(ctx)).with_graceful_shutdown(stop.cancelled_owned()).await
    });

    let mut child = std::process::Command::new("node")
        .arg("rpc-client-all.mjs")
        .arg(port.to_string())
        .current_dir(&js)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node (scripts/setup.sh installs it)");
    // The script makes a few dozen loopback requests; a minute means it hangs.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rpc-client-all.mjs did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rpc-client.mjs failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all commands answered"), "{stdout}");

    shutdown.cancel();
    let stopped = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await });
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "the server stops cleanly: {stopped:?}");
}
