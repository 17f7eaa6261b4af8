//! The gateway as a person sees it: a directory is added with `btfs add -r`, `btfs daemon` serves it, and
//! Debian's Chromium (headless, `tests/js/browser-listing.mjs`) opens `/ipfs/<dircid>/`, takes a screenshot,
//! clicks `hello.txt` and reads what the gateway sends back.
//!
//! The screenshot is kept at `$CARGO_TARGET_TMPDIR/gateway-listing.png`; with `BTFS_UPDATE_SCREENSHOT=1` it
//! is also copied to `docs/img/gateway-listing.png`. Chromium, Node and the npm packages come from
//! `scripts/setup.sh`: without them this test fails, it never skips.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use btfs_tests::daemon::Daemon;
use btfs_tests::{TestRepo, chacha20_bytes, js_dir};
use serde_json::Value;

const HELLO: &str = "Hello from btfs!\nThis line came through the gateway.\n";

/// The directory's files: names as a listing must show them, and their content.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("hello.txt", HELLO.as_bytes().to_vec()),
        ("notes.md", b"# Notes\n\n- one\n- two\n".to_vec()),
        ("read me.txt", b"a name with a space\n".to_vec()),
        ("random.bin", chacha20_bytes("browser listing", 3000)),
    ]
}

/// The driver bounds itself at 60 s; this is the outer bound in case node itself hangs.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(90);

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(path.is_file(), "Chromium is missing at {}: run scripts/setup.sh", path.display());
    path
}

/// Runs `browser-listing.mjs` and returns its JSON report; panics with its stderr on failure.
fn browse(listing_url: &str, link_text: &str, screenshot: &Path) -> Value {
    let mut child = Command::new("node")
        .arg(js_dir().join("browser-listing.mjs"))
        .args([listing_url, link_text])
        .arg(screenshot)
        .env("CHROMIUM", chromium())
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node tests/js/browser-listing.mjs (run scripts/setup.sh)");
    // Read both pipes on threads so a chatty child never blocks on a full pipe while we wait.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if start.elapsed() > DRIVER_TIMEOUT {
            // SIGTERM first: puppeteer then closes Chromium, which a SIGKILL of node would orphan.
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(3));
            let _ = child.kill();
            let _ = child.wait();
            panic!("browser-listing.mjs did not finish within {DRIVER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().expect("the stdout reader");
    let stderr = stderr.join().expect("the stderr reader");
    assert!(
        status.success(),
        "browser-listing.mjs failed ({status}) on {listing_url}:\n{stderr}\n(if Chromium or puppeteer-core is \
         missing, run scripts/setup.sh)"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("the driver printed no JSON ({e}): {stdout:?}"))
}

#[test]
fn a_browser_lists_a_directory_and_opens_a_file() {
    // Fail before the daemon starts, with the message that says what to do.
    chromium();
    let work = tempfile::tempdir().expect("tempdir");
    let site = work.path().join("site");
    std::fs::create_dir(&site).expect("create the directory");
    for (name, content) in files() {
        std::fs::write(site.join(name), content).expect("write a file");
    }

    let repo = TestRepo::init();
    let dir_cid = repo.run_ok(&["add", "-r", "-Q", site.to_str().expect("utf-8 path")]).trim().to_string();
    let daemon = Daemon::start_on(repo);
    let gateway = daemon.gateway_url();
    let listing_url = format!("{gateway}/ipfs/{dir_cid}/");

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gateway-listing.png");
    let report = browse(&listing_url, "hello.txt", &screenshot);
    eprintln!("browser report: {report}");
    eprintln!("screenshot: {}", screenshot.display());

    assert_eq!(report["listingStatus"], 200, "the listing {listing_url}: {report}");
    let links: Vec<&str> = report["links"].as_array().expect("links").iter().filter_map(Value::as_str).collect();
    for (name, _) in files() {
        assert!(links.contains(&name), "the listing of {listing_url} has no link named {name:?}; links: {links:?}");
    }
    assert_eq!(report["fileStatus"], 200, "clicking hello.txt: {report}");
    assert_eq!(report["fileBody"].as_str(), Some(HELLO), "clicking hello.txt showed other text: {report}");
    let file_url = report["fileUrl"].as_str().expect("fileUrl");
    assert!(file_url.starts_with(&format!("{gateway}/")), "hello.txt's link left the gateway: {file_url}");
    assert_eq!(report["blocked"], serde_json::json!([]), "the pages asked for resources outside 127.0.0.1");

    let png = std::fs::read(&screenshot).expect("the driver saved the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
    if std::env::var("BTFS_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let docs_img = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
        std::fs::create_dir_all(&docs_img).expect("create docs/img");
        std::fs::copy(&screenshot, docs_img.join("gateway-listing.png")).expect("copy the screenshot to docs/img");
    }
}
