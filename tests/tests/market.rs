//! The storage market end to end, with real `btfs daemon` processes on 127.0.0.1 and the `none` settlement
//! backend (cheques signed and verified, not cashed), and once on a real chain (anvil, `evm` backend): a renter
//! uploads to hosts found through the DHT, proofs pass and cheques arrive; m hosts die at once and the file
//! still downloads; repair re-places lost shards on fresh hosts until the file has outlived more than m
//! hosts; a host that deletes its shard is caught, stops being paid, and is replaced; a host that never held
//! its shard and answers challenges with made-up bytes (`market/peers.rs`) is caught, paid nothing, and replaced.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use btfs_tests::chain::Anvil;
use btfs_tests::daemon::Daemon;
use btfs_tests::write_chacha20_file;
use serde_json::Value;

#[path = "market/peers.rs"]
mod peers;

/// Fast clocks for tests: a challenge every 3 s answered within 2 s, a payment period every 6 s.
const MARKET_CONFIG: &[(&str, &str)] = &[
    ("Storage.ChallengeDeadline", "\"2s\""),
    ("Storage.ChallengeInterval", "\"3s\""),
    ("Storage.FailureThreshold", "2"),
    ("Storage.PaymentPeriod", "\"6s\""),
    ("Storage.CheckInterval", "\"1s\""),
];

pub struct Market {
    pub boot: Daemon,
    pub renter: Daemon,
    pub hosts: Vec<Option<Daemon>>,
}

fn start_node(bootstrap: &str, host: bool, extra: &[(&str, &str)]) -> Daemon {
    let mut config: Vec<(&str, &str)> = MARKET_CONFIG.to_vec();
    config.extend_from_slice(extra);
    config.push(("Bootstrap", bootstrap));
    if host {
        config.push(("Storage.Host.Enabled", "true"));
        config.push(("Storage.Host.PricePerGiBDay", "\"1000000000\""));
    }
    Daemon::start(&config)
}

impl Market {
    pub fn start(hosts: usize) -> Self {
        Self::start_with(hosts, &[])
    }

    /// A boot node, a renter and `hosts` hosts, each with `extra` settings too.
    pub fn start_with(hosts: usize, extra: &[(&str, &str)]) -> Self {
        let boot = Daemon::start(&[]);
        let bootstrap = format!("[\"{}\"]", boot.tcp_addr());
        let renter = start_node(&bootstrap, false, extra);
        let hosts = (0..hosts).map(|_| Some(start_node(&bootstrap, true, extra))).collect();
        Self { boot, renter, hosts }
    }

    pub fn host_by_peer(&mut self, peer: &str) -> Option<(usize, &mut Daemon)> {
        self.hosts.iter_mut().enumerate().find_map(|(i, h)| h.as_mut().filter(|d| d.peer_id == peer).map(|d| (i, d)))
    }

    /// Kills a running host (SIGKILL: no goodbye to the renter); panics if no running host has that peer id.
    pub fn kill_host(&mut self, peer: &str) {
        let (i, _) = self.host_by_peer(peer).expect("running");
        if let Some(mut d) = self.hosts[i].take() {
            d.kill();
        }
    }
}

fn json(daemon: &Daemon, args: &[&str]) -> Value {
    let out = daemon.run_ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("btfs {args:?} printed no JSON ({e}): {out}"))
}

fn status(renter: &Daemon, id: &str) -> Value {
    json(renter, &["storage", "upload", "status", id])
}

/// Waits until `check` holds on the upload's status, or panics with the last status.
fn wait_status(renter: &Daemon, id: &str, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(renter, id);
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; status: {s:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn shards(s: &Value) -> Vec<Value> {
    s["Shards"].as_array().cloned().unwrap_or_default()
}

fn all_held(s: &Value) -> bool {
    s["State"] == "active" && shards(s).iter().all(|x| x["State"] == "stored")
}

fn hosts_of(s: &Value) -> Vec<String> {
    shards(s).iter().map(|x| x["Host"].as_str().unwrap_or_default().to_string()).collect()
}

fn download_matches(renter: &Daemon, cid: &str, original: &Path, out: &Path) {
    let _ = std::fs::remove_file(out);
    renter.run_ok(&["storage", "download", cid, "-o", out.to_str().expect("utf-8")]);
    assert!(
        std::fs::read(original).expect("read original") == std::fs::read(out).expect("read download"),
        "download differs"
    );
}

/// Starts an upload of a fresh file and waits until every shard is held.
fn upload(m: &Market, dir: &Path, size: u64, k: u32, parity: u32) -> (String, String, std::path::PathBuf) {
    upload_with(m, dir, size, k, parity, &[])
}

/// `upload` with more `storage upload` arguments.
fn upload_with(
    m: &Market,
    dir: &Path,
    size: u64,
    k: u32,
    parity: u32,
    extra: &[&str],
) -> (String, String, std::path::PathBuf) {
    let src = dir.join("original");
    write_chacha20_file(&src, "market file", size).expect("write input");
    let cid = m.renter.run_ok(&["add", "-Q", "--cid-version=1", src.to_str().expect("utf-8")]).trim().to_string();
    let (k, parity) = (k.to_string(), parity.to_string());
    let id = m
        .renter
        .run_ok(
            &[
                "storage",
                "upload",
                cid.as_str(),
                "--data-shards",
                &k,
                "--parity-shards",
                &parity,
                "--piece-size",
                "64KiB",
                "--storage-length",
                "1h",
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
        )
        .trim()
        .to_string();
    assert_eq!(id.len(), 16, "storage upload prints a session id, got {id:?}");
    let s = wait_status(&m.renter, &id, "every shard held", Duration::from_secs(120), all_held);
    let placed = hosts_of(&s);
    let distinct: HashSet<&String> = placed.iter().collect();
    assert_eq!(distinct.len(), placed.len(), "two shards of one file on one host: {placed:?}");
    // From here on the renter keeps only the manifest: no file, no shards. Downloads and repairs must come
    // from the hosts.
    m.renter.run_ok(&["pin", "rm", &cid]);
    m.renter.run_ok(&["repo", "gc"]);
    let stat = m.renter.run_ok(&["repo", "stat"]);
    let objects: u64 = stat
        .lines()
        .find_map(|l| l.trim().strip_prefix("NumObjects:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no NumObjects in {stat}"));
    assert_eq!(objects, 1, "after gc the renter should hold the manifest only: {stat}");
    (cid, id, src)
}

#[test]
fn upload_proofs_cheques_loss_of_m_hosts_and_repair_past_m() {
    let work = tempfile::tempdir().expect("tempdir");
    // k=2, m=2: four shards; three spare hosts for repairs.
    let mut m = Market::start(7);
    let (cid, id, src) = upload(&m, work.path(), 3 * 1024 * 1024 + 123, 2, 2);

    // Proofs pass on every shard and cheques go out (upfront, then per period).
    let s = wait_status(&m.renter, &id, "a passed proof on every shard", Duration::from_secs(60), |s| {
        shards(s).iter().all(|x| x["ProofsPassed"].as_u64().unwrap_or(0) >= 1)
    });
    assert!(shards(&s).iter().all(|x| x["ProofsFailed"] == 0), "an honest host failed a proof: {s:#}");
    assert_eq!(s["Settlement"], "unsettled");
    let first_host = hosts_of(&s)[0].clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, host) = m.host_by_peer(&first_host).expect("host is running");
        let got = json(host, &["cheque", "list"]);
        let received = got["Received"].as_array().cloned().unwrap_or_default();
        if received.iter().any(|r| r["Cumulative"].as_str().is_some_and(|c| c != "0")) {
            assert!(
                received.iter().all(|r| r["Cashed"] == "unsettled"),
                "none backend must not show cashed amounts: {got}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "host never received a cheque: {got}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Kill m = 2 hosts at once (the two data shards' hosts): the file still rebuilds from the parity shards.
    let placed = hosts_of(&s);
    for peer in &placed[..2] {
        m.kill_host(peer);
    }
    download_matches(&m.renter, &cid, &src, &work.path().join("after-loss"));

    // Repair re-places both lost shards on fresh hosts.
    let s = wait_status(&m.renter, &id, "repair of the two lost shards", Duration::from_secs(180), |s| {
        all_held(s) && hosts_of(s).iter().all(|h| !placed[..2].contains(h))
    });
    let repaired = hosts_of(&s);

    // Lose a third host (more than m over time): repair again, and the file is still whole.
    m.kill_host(&repaired[2]);
    let lost = repaired[2].clone();
    let s = wait_status(&m.renter, &id, "repair after a third loss", Duration::from_secs(180), |s| {
        all_held(s) && !hosts_of(s).contains(&lost)
    });
    assert_eq!(shards(&s).len(), 4);
    download_matches(&m.renter, &cid, &src, &work.path().join("after-three-losses"));

    let contracts = json(&m.renter, &["storage", "contracts", "list"]);
    let lost_count = contracts["Contracts"].as_array().map_or(0, |a| a.iter().filter(|c| c["State"] == "lost").count());
    assert!(lost_count >= 3, "three contracts should be lost: {contracts:#}");
}

#[test]
fn a_host_that_deletes_its_shard_is_caught_unpaid_and_replaced() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut m = Market::start(4);
    let (cid, id, src) = upload(&m, work.path(), 1024 * 1024, 2, 1);
    let s = status(&m.renter, &id);
    let cheat_peer = hosts_of(&s)[0].clone();
    let shard = shards(&s)[0]["Cid"].as_str().expect("shard cid").to_string();
    {
        let (_, cheat) = m.host_by_peer(&cheat_peer).expect("running");
        cheat.run_ok(&["pin", "rm", &shard]);
        cheat.run_ok(&["repo", "gc"]);
    }
    let s = wait_status(&m.renter, &id, "the cheat caught and replaced", Duration::from_secs(120), |s| {
        all_held(s) && !hosts_of(s).contains(&cheat_peer)
    });
    assert!(all_held(&s));
    let contracts = json(&m.renter, &["storage", "contracts", "list"]);
    let cheat = contracts["Contracts"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["Peer"] == cheat_peer.as_str()).cloned())
        .expect("the cheat's contract");
    assert_eq!(cheat["State"], "lost", "{cheat:#}");
    assert!(cheat["ProofsFailed"].as_u64().unwrap_or(0) >= 2, "{cheat:#}");
    // Paid no more than the upfront part and periods before the deletion; not paid after: check it stops.
    let paid_then = cheat["Paid"].as_str().unwrap_or("0").to_string();
    std::thread::sleep(Duration::from_secs(8));
    let contracts = json(&m.renter, &["storage", "contracts", "list"]);
    let cheat = contracts["Contracts"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["Peer"] == cheat_peer.as_str()).cloned())
        .expect("the cheat's contract");
    assert_eq!(cheat["Paid"].as_str().unwrap_or("0"), paid_then, "a lost contract was paid again");
    download_matches(&m.renter, &cid, &src, &work.path().join("after-cheat"));
}

fn contract_with<'a>(contracts: &'a Value, peer: &str) -> &'a Value {
    contracts["Contracts"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["Peer"] == peer))
        .unwrap_or_else(|| panic!("no contract with {peer}: {contracts:#}"))
}

/// A `Liar` that cheats by `conduct` wins a shard (it quotes the lowest price), is caught by its challenges
/// (the contract lost, every proof failed, the reason saying `reason`), is paid nothing (not a cheque), and its
/// shard is moved to the honest host left over; the file still downloads.
fn a_cheating_host_is_caught_paid_nothing_and_replaced(conduct: peers::Conduct, reason: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let m = Market::start(3);
    let liar = peers::Liar::start(conduct);
    // The liar quotes the lowest price, so of these four the renter places a shard on it first; the
    // honest host left over takes the shard when it is repaired.
    let named: Vec<String> =
        std::iter::once(liar.addr.clone()).chain(m.hosts.iter().flatten().map(|h| h.tcp_addr().to_string())).collect();
    let hosts = named.join(",");
    let (cid, id, src) = upload_with(&m, work.path(), 1024 * 1024, 2, 1, &["--hosts", &hosts]);
    assert!(hosts_of(&status(&m.renter, &id)).contains(&liar.peer), "the cheapest host, the liar, holds a shard");

    let s = wait_status(&m.renter, &id, "the liar caught and replaced", Duration::from_secs(120), |s| {
        all_held(s) && !hosts_of(s).contains(&liar.peer)
    });
    assert!(all_held(&s));
    assert!(liar.challenges.load(std::sync::atomic::Ordering::Relaxed) >= 2, "the liar was challenged");
    let contracts = json(&m.renter, &["storage", "contracts", "list"]);
    let lied = contract_with(&contracts, &liar.peer);
    assert_eq!(lied["State"], "lost", "{lied:#}");
    assert_eq!(lied["ProofsPassed"], 0, "{lied:#}");
    assert!(lied["ProofsFailed"].as_u64().unwrap_or(0) >= 2, "{lied:#}");
    assert!(lied["Reason"].as_str().unwrap_or_default().contains(reason), "the reason should say {reason:?}: {lied:#}");
    assert_eq!(lied["Paid"], "0", "{lied:#}");

    // Honest hosts are paid (the upfront part after their first proof), the liar never: not a cheque.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let contracts = json(&m.renter, &["storage", "contracts", "list"]);
        let paid_honest = contracts["Contracts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["Peer"] != liar.peer.as_str() && c["Paid"] != "0"));
        if paid_honest {
            break;
        }
        assert!(Instant::now() < deadline, "no honest host was paid: {contracts:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let cheques = liar.cheques.lock().expect("not poisoned").clone();
    assert!(cheques.is_empty(), "the liar was sent cheques: {cheques:?}");
    download_matches(&m.renter, &cid, &src, &work.path().join("after-liar"));
}

#[test]
fn a_host_that_serves_made_up_bytes_is_caught_paid_nothing_and_replaced() {
    a_cheating_host_is_caught_paid_nothing_and_replaced(peers::Conduct::MadeUpProofs, "wrong proof");
}

/// Late is as bad as wrong: a host that answers after `Storage.ChallengeDeadline` fails the challenge
/// whatever it sends.
#[test]
fn a_host_that_answers_challenges_late_is_caught_paid_nothing_and_replaced() {
    a_cheating_host_is_caught_paid_nothing_and_replaced(peers::Conduct::LateProofs, "did not answer within 2 s");
}

/// A host that countersigns and then disappears (before fetching the shard or saying `Stored`) is noticed
/// within seconds, not after the minute a shard's fetch is allowed, and the shard goes to another host.
#[test]
fn a_host_that_vanishes_mid_upload_is_replaced() {
    let work = tempfile::tempdir().expect("tempdir");
    let m = Market::start(3);
    let liar = peers::Liar::start(peers::Conduct::Vanishes);
    let named: Vec<String> =
        std::iter::once(liar.addr.clone()).chain(m.hosts.iter().flatten().map(|h| h.tcp_addr().to_string())).collect();
    let hosts = named.join(",");
    // `--wait` returns once every shard is held: here, by the three honest hosts.
    let (cid, id, src) = upload_with(&m, work.path(), 1024 * 1024, 2, 1, &["--hosts", &hosts]);
    let s = status(&m.renter, &id);
    assert!(all_held(&s), "{s:#}");
    assert!(!hosts_of(&s).contains(&liar.peer), "the vanished host holds no shard: {s:#}");
    let contracts = json(&m.renter, &["storage", "contracts", "list"]);
    let vanished = contract_with(&contracts, &liar.peer);
    assert_eq!(vanished["State"], "failed", "{vanished:#}");
    assert!(vanished["Reason"].as_str().unwrap_or_default().contains("vanished"), "{vanished:#}");
    assert_eq!(vanished["Paid"], "0", "{vanished:#}");
    download_matches(&m.renter, &cid, &src, &work.path().join("after-vanish"));
}

/// Asserts that `answer` is a refusal with `code` whose reason says `words`.
fn assert_refused(answer: peers::Answer, code: btfs_contracts_client::wire::RefuseCode, words: &str) {
    use btfs_contracts_client::wire::Response;
    match answer {
        peers::Answer::Response(r) => match *r {
            Response::Refused { code: c, reason } => {
                assert_eq!(c, code, "{reason}");
                assert!(reason.contains(words), "refusal {reason:?} should say {words:?}");
            }
            other => panic!("expected a {code:?} refusal saying {words:?}, got {other:?}"),
        },
        other => panic!("expected a {code:?} refusal saying {words:?}, got {other:?}"),
    }
}

/// Storage-protocol messages a hostile peer might send a host, each answered with a refusal that names the
/// problem or with the stream closed, none of them taking the host down: it quotes honestly afterwards.
#[test]
fn malformed_storage_messages_are_refused_and_the_host_keeps_serving() {
    use btfs_contracts_client::wire::{RefuseCode, Request, Response};
    use btfs_contracts_client::{B256, Cheque, Contract, NodeKey, SignedCheque, SignedContract, U256};
    use peers::{Answer, RawPeer, frame};

    let m = Market::start(1);
    let host = m.hosts[0].as_ref().expect("running");
    let raw = RawPeer::connect(host.tcp_addr());
    let peer = host.peer_id.as_str();
    let refused = assert_refused;
    // `hung_up`: the host ended the stream itself, rather than this side giving up waiting.
    let closed = |answer: Answer, what: &str, hung_up: bool| match answer {
        Answer::Closed(why) => {
            assert!(!hung_up || !why.starts_with("no answer within"), "{what}: the host should hang up: {why}");
        }
        other => panic!("{what}: expected the stream closed, got {other:?}"),
    };
    let quick = Duration::from_secs(10);

    // Framing: a length over the 4 MiB cap (refused before anything is allocated), a frame cut short, and
    // an empty stream.
    closed(raw.send(peer, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3], true, quick), "a 4 GiB length", true);
    closed(raw.send(peer, &[0, 0, 0, 100, 1, 2, 3], true, quick), "a frame cut short", true);
    closed(raw.send(peer, &[], true, quick), "an empty stream", true);
    // Bodies that are not a request: not CBOR, CBOR of another shape, a response where a request belongs.
    refused(raw.send(peer, &frame(b"\xff\x00 not cbor"), true, quick), RefuseCode::Malformed, "malformed request");
    refused(raw.send(peer, &frame(&[0xa1, 0x61, 0x78, 0x01]), true, quick), RefuseCode::Malformed, "malformed request");
    let response = btfs_contracts_client::wire::encode(&Response::Ack).expect("encode");
    refused(raw.send(peer, &frame(&response), true, quick), RefuseCode::Malformed, "malformed request");

    // Well-formed requests that must not be believed.
    let stranger = NodeKey::from_secret(&[7u8; 32]).expect("key");
    let contract = Contract {
        contract_id: B256::repeat_byte(1),
        renter: stranger.address(),
        host: stranger.address(),
        shard_cid: b"not a cid".to_vec(),
        shard_size: 1 << 20,
        shard_index: 0,
        upload_id: B256::repeat_byte(2),
        start: 0,
        end: 1,
        price: U256::from(1u8),
        upfront: U256::ZERO,
        period: 1,
        challenge_interval: 1,
        challenge_deadline: 1,
        failure_threshold: 1,
        chain_id: 0,
        token: Default::default(),
        vault: Default::default(),
    };
    let signed = SignedContract::sign_renter(contract.clone(), &stranger).expect("sign");
    refused(raw.request(peer, &Request::Propose { contract: signed }), RefuseCode::BadSignature, "was sent by");
    // Signed by the sender itself, and still refused for its terms: a start long past, then a shard over the
    // host's size limit.
    let own = |c: Contract| Request::Propose { contract: SignedContract::sign_renter(c, &raw.key).expect("sign") };
    let mine = Contract { renter: raw.key.address(), ..contract };
    refused(raw.request(peer, &own(mine.clone())), RefuseCode::Terms, "too far in the past");
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let huge = Contract { start, end: start + 3600, shard_size: 1 << 50, ..mine };
    refused(raw.request(peer, &own(huge)), RefuseCode::Terms, "above the maximum");
    let id = B256::repeat_byte(9);
    refused(
        raw.request(peer, &Request::Challenge { contract_id: id, leaf_index: 0 }),
        RefuseCode::UnknownContract,
        "no contract",
    );
    let cheque = Cheque {
        chain_id: 0,
        vault: Default::default(),
        beneficiary: stranger.address(),
        cumulative_payout: U256::from(1_000_000u64),
    };
    let cheque = SignedCheque::sign(cheque, &stranger).expect("sign");
    refused(raw.request(peer, &Request::Pay { contract_id: id, cheque }), RefuseCode::UnknownContract, "no contract");

    // A stream that sends half a length and stalls does not hold the host up.
    let stalled = std::thread::spawn({
        let host_addr = host.tcp_addr().to_string();
        let peer = peer.to_string();
        move || RawPeer::connect(&host_addr).send(&peer, &[0, 0], false, Duration::from_secs(3))
    });
    std::thread::sleep(Duration::from_millis(300));
    let answer = raw.request(peer, &Request::Quote { shard_size: 1 << 20, duration_secs: 3600 });
    let Answer::Response(response) = answer else { panic!("an honest quote request after the garbage: {answer:?}") };
    let Response::Quote(ad) = *response else { panic!("an honest quote request after the garbage: {response:?}") };
    assert_eq!(ad.ad.peer_id, host.peer_id);
    closed(stalled.join().expect("join"), "a stalled request", false);
    host.run_ok(&["id"]);
}

/// A host daemon checks every cheque a renter sends under a real contract: a replayed, a lower, a forged, a
/// tampered, a misdirected and a wrong-chain cheque are each refused with the reason, none of them moves
/// what the host counts as paid, and honest cheques before and after them are accepted.
#[test]
fn a_host_refuses_bad_cheques_and_counts_only_the_good_ones() {
    use btfs_contracts_client::wire::{RefuseCode, Request, Response};
    use btfs_contracts_client::{B256, Cheque, Contract, NodeKey, SignedCheque, SignedContract, U256, quote_price};
    use peers::{Answer, RawPeer};

    let m = Market::start(1);
    let host = m.hosts[0].as_ref().expect("running");
    let raw = RawPeer::connect(host.tcp_addr());
    let peer = host.peer_id.as_str();
    let answer = |request: &Request| match raw.request(peer, request) {
        Answer::Response(r) => *r,
        other => panic!("no answer to {request:?}: {other:?}"),
    };

    // The raw peer is the renter: it asks for a quote and proposes a contract on the host's terms.
    let (shard_size, secs) = (1u64 << 20, 3600u64);
    let Response::Quote(ad) = answer(&Request::Quote { shard_size, duration_secs: secs }) else { panic!("no quote") };
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let contract_id = B256::repeat_byte(0x42);
    let contract = Contract {
        contract_id,
        renter: raw.key.address(),
        host: ad.ad.host,
        shard_cid: btfs_chunker::erasure::SHARD_FILE.leaf(vec![7u8; 64]).0.cid.to_bytes(),
        shard_size,
        shard_index: 0,
        upload_id: B256::repeat_byte(0x43),
        start,
        end: start + secs,
        price: quote_price(shard_size, secs, ad.ad.price_per_gib_day),
        upfront: U256::ZERO,
        period: 6,
        challenge_interval: 3,
        challenge_deadline: 2,
        failure_threshold: 2,
        chain_id: 0,
        token: Default::default(),
        vault: Default::default(),
    };
    let signed = SignedContract::sign_renter(contract, &raw.key).expect("sign");
    let accepted = answer(&Request::Propose { contract: signed });
    assert!(
        matches!(accepted, Response::Accepted { .. }),
        "the host should sign a contract on its own terms: {accepted:?}"
    );

    let cheque = |cumulative: u64| Cheque {
        chain_id: 0,
        vault: Default::default(),
        beneficiary: ad.ad.host,
        cumulative_payout: U256::from(cumulative),
    };
    let pay = |cheque: SignedCheque| raw.request(peer, &Request::Pay { contract_id, cheque });
    let accepted = |answer: Answer, cumulative: u64| {
        let want = U256::from(cumulative);
        match answer {
            Answer::Response(r) if matches!(*r, Response::ChequeAccepted { cumulative: got } if got == want) => {}
            other => panic!("the cheque for {cumulative} should be accepted: {other:?}"),
        }
    };
    let refused = |answer: Answer, words: &str| assert_refused(answer, RefuseCode::Cheque, words);
    let mine = |c: Cheque| SignedCheque::sign(c, &raw.key).expect("sign");

    accepted(pay(mine(cheque(100))), 100);
    refused(pay(mine(cheque(100))), "does not raise the last accepted 100");
    refused(pay(mine(cheque(50))), "does not raise the last accepted 100");
    let stranger = NodeKey::from_secret(&[7u8; 32]).expect("key");
    refused(pay(SignedCheque::sign(cheque(500), &stranger).expect("sign")), "not the vault's issuer");
    let mut tampered = mine(cheque(300));
    tampered.cheque.cumulative_payout = U256::from(3_000_000u64);
    refused(pay(tampered), "not the vault's issuer");
    refused(pay(mine(Cheque { beneficiary: stranger.address(), ..cheque(600) })), "not this host");
    refused(pay(mine(Cheque { chain_id: 5, ..cheque(700) })), "chain id 5");
    accepted(pay(mine(cheque(250))), 250);

    // What the host's operator sees: 250 received under the contract, no more.
    let contracts = json(host, &["storage", "contracts", "list"]);
    let c = contract_with(&contracts, &raw.peer);
    assert_eq!(c["Paid"], "250", "{c:#}");
    host.run_ok(&["id"]);
}

#[test]
fn default_ten_plus_twenty_on_thirty_hosts_survives_losing_twenty_at_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut m = Market::start(30);
    // 10 data + 20 parity (the defaults, given explicitly so the test says what it checks).
    let (cid, id, src) = upload(&m, work.path(), 2 * 1024 * 1024 + 7, 10, 20);
    let s = status(&m.renter, &id);
    assert_eq!(shards(&s).len(), 30);
    // Kill twenty hosts at once, data shards' hosts first: only ten parity shards are left.
    for peer in hosts_of(&s).iter().take(20) {
        m.kill_host(peer);
    }
    download_matches(&m.renter, &cid, &src, &work.path().join("from-ten-parity-shards"));
}

/// The EVM chain end to end: anvil, the committed token and vault artifacts, a renter that deploys and funds
/// its vault with `btfs vault`, hosts that cash their cheques on chain; balances checked on the chain itself.
/// Then, still on the chain: m hosts killed at once (the file downloads from the k left), and repair placing
/// lost shards on fresh hosts under new contracts paid from the same vault, past m losses over time; at the
/// end every token is still accounted for.
#[test]
fn evm_cheques_are_cashed_on_chain_and_balances_add_up() {
    let mut anvil = Anvil::start();
    let token = anvil.deploy_test_token();
    let chain_id = anvil.chain_id.to_string();
    let rpc = format!("\"{}\"", anvil.url);
    let token_json = format!("\"{token}\"");
    let extra = [
        ("Settlement.RpcUrl", rpc.as_str()),
        ("Settlement.ChainId", chain_id.as_str()),
        ("Settlement.Token", token_json.as_str()),
        ("Settlement.CashThreshold", "\"1\""),
        // Last: switching the backend checks the settings above.
        ("Settlement.Backend", "\"evm\""),
    ];
    let work = tempfile::tempdir().expect("tempdir");
    // k=2, m=1: three shards, and two spare hosts for repairs.
    let mut m = Market::start_with(5, &extra);
    let address = |d: &Daemon| json(d, &["vault", "balance"])["Address"].as_str().expect("Address").to_string();
    let renter_addr = address(&m.renter);
    let host_addrs: Vec<String> = m.hosts.iter().flatten().map(address).collect();
    for a in host_addrs.iter().chain([&renter_addr]) {
        anvil.fund(a, 100);
    }
    const MINTED: u128 = 1_000_000_000_000_000;
    const DEPOSIT: u128 = 1_000_000_000_000;
    anvil.mint(&token, &renter_addr, MINTED);

    // Before a vault exists an upload under evm is refused with a reason naming the fix.
    let early = work.path().join("early");
    write_chacha20_file(&early, "early", 1000).expect("write");
    let early_cid = m.renter.run_ok(&["add", "-Q", early.to_str().expect("utf-8")]).trim().to_string();
    let out = m.renter.repo.run(&["storage", "upload", &early_cid]);
    assert!(!out.status.success(), "an upload without a vault must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("vault deploy"), "{}", String::from_utf8_lossy(&out.stderr));
    m.renter.run_ok(&["pin", "rm", &early_cid]);
    let vault = json(&m.renter, &["vault", "deploy"])["Vault"].as_str().expect("Vault").to_string();
    json(&m.renter, &["vault", "deposit", &DEPOSIT.to_string()]);
    assert_eq!(anvil.token_balance(&token, &vault), DEPOSIT);
    assert_eq!(anvil.token_balance(&token, &renter_addr), MINTED - DEPOSIT);
    let b = json(&m.renter, &["vault", "balance"]);
    assert_eq!(b["Balance"], DEPOSIT.to_string(), "{b}");

    let (cid, id, src) = upload(&m, work.path(), 1024 * 1024 + 5, 2, 1);
    let s = status(&m.renter, &id);
    assert_eq!(s["Settlement"], "evm", "{s:#}");
    let placed = hosts_of(&s);

    // Every host cashes on chain: the upfront part, then periods after passed proofs. Each host's token balance
    // is exactly what its vault record says it cashed, and the vault lost exactly the sum.
    let deadline = Instant::now() + Duration::from_secs(120);
    let cashed = loop {
        let mut cashed = Vec::new();
        for (h, addr) in m.hosts.iter().flatten().zip(&host_addrs).filter(|(h, _)| placed.contains(&h.peer_id)) {
            let list = json(h, &["cheque", "list"]);
            let got: u128 = list["Received"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["Vault"] == vault.as_str()))
                .and_then(|r| r["Cashed"].as_str())
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            cashed.push((addr.clone(), got, list));
        }
        let renter_paid: Vec<u128> = json(&m.renter, &["storage", "contracts", "list"])["Contracts"]
            .as_array()
            .map(|a| a.iter().map(|c| c["Paid"].as_str().and_then(|p| p.parse().ok()).unwrap_or(0)).collect())
            .unwrap_or_default();
        // A period beyond the upfront part was paid and cashed somewhere.
        let periods_paid =
            json(&m.renter, &["storage", "contracts", "list"])["Contracts"].as_array().is_some_and(|a| {
                a.iter().any(|c| c["Paid"].as_str().unwrap_or("0") != c["Upfront"].as_str().unwrap_or("0"))
            });
        if cashed.iter().all(|(_, c, _)| *c > 0) && periods_paid && renter_paid.iter().all(|p| *p > 0) {
            break cashed;
        }
        assert!(Instant::now() < deadline, "cheques not cashed on chain in time: {cashed:#?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    for (addr, got, list) in &cashed {
        // Cashing may be in flight between the record and the chain read; read the chain after the record.
        let on_chain = anvil.token_balance(&token, addr);
        assert!(on_chain >= *got && on_chain > 0, "host {addr}: chain has {on_chain}, record says {got}: {list}");
    }
    // Hosts go on cashing while the test reads, one balance at a time: take a snapshot in which the hosts'
    // balances did not move while the vault's was read.
    let hosts_total = |anvil: &Anvil| cashed.iter().map(|(addr, _, _)| anvil.token_balance(&token, addr)).sum::<u128>();
    let (vault_now, total) = loop {
        let before = hosts_total(&anvil);
        let vault_now = anvil.token_balance(&token, &vault);
        if hosts_total(&anvil) == before {
            break (vault_now, before);
        }
    };
    assert_eq!(vault_now + total, DEPOSIT, "vault {vault_now} + cashed {total} != deposit {DEPOSIT}");
    // The node's own reading lies between two chain readings taken around it (the vault only goes down).
    let b = json(&m.renter, &["vault", "balance"]);
    let vault_after = anvil.token_balance(&token, &vault);
    let reported: u128 = b["Balance"].as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{b}"));
    assert!(
        vault_after <= reported && reported <= vault_now,
        "vault balance {reported} outside {vault_after}..={vault_now}: {b}"
    );

    // The chain goes down for three payment periods (anvil stopped, its state kept). The nodes go on serving
    // and proving; the renter goes on signing cheques, which the hosts cannot check against the vault and
    // refuse for now; a command that needs the chain fails naming the endpoint. Once the chain is back the
    // queued cheques are taken and cashed: the hosts hold on chain at least what the renter had paid by the
    // end of the outage.
    let sum = |field: &str| -> u128 {
        json(&m.renter, &["storage", "contracts", "list"])["Contracts"].as_array().map_or(0, |a| {
            a.iter()
                .map(|c| match &c[field] {
                    Value::String(v) => v.parse().unwrap_or(0),
                    v => v.as_u64().map_or(0, u128::from),
                })
                .sum()
        })
    };
    let (proofs_before, paid_before) = (sum("ProofsPassed"), sum("Paid"));
    anvil.stop();
    let down = Instant::now();
    let out = m.renter.repo.run(&["vault", "balance"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "vault balance with the chain down must fail");
    assert!(err.contains(&anvil.url) || err.contains("127.0.0.1"), "the error should name the endpoint: {err}");
    std::thread::sleep(Duration::from_secs(18).saturating_sub(down.elapsed()));
    m.renter.run_ok(&["id"]);
    assert!(all_held(&status(&m.renter, &id)), "the upload stays healthy while the chain is down");
    let (proofs_down, paid_down) = (sum("ProofsPassed"), sum("Paid"));
    assert!(proofs_down >= proofs_before + 3, "proofs go on while the chain is down: {proofs_before} → {proofs_down}");
    assert!(paid_down > paid_before, "cheques go on being signed while the chain is down: {paid_before} → {paid_down}");
    anvil.restart();
    let deadline = Instant::now() + Duration::from_secs(90);
    while hosts_total(&anvil) < paid_down {
        assert!(
            Instant::now() < deadline,
            "cheques queued during the outage were not cashed: hosts hold {}, the renter had paid {paid_down}",
            hosts_total(&anvil)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let vault_now = anvil.token_balance(&token, &vault);

    // The renter withdraws part of what is left; the token comes back to its address.
    let back = vault_now / 2;
    json(&m.renter, &["vault", "withdraw", &back.to_string()]);
    assert_eq!(anvil.token_balance(&token, &renter_addr), MINTED - DEPOSIT + back);

    download_matches(&m.renter, &cid, &src, &work.path().join("download"));

    // Kill m = 1 host: the file still downloads from the k left.
    m.kill_host(&placed[0]);
    download_matches(&m.renter, &cid, &src, &work.path().join("after-loss"));
    // Repair puts the lost shard on a spare host, under a new contract on the same vault; losing a second
    // host (more than m over time) is repaired the same way.
    let s = wait_status(&m.renter, &id, "repair of the lost shard", Duration::from_secs(180), |s| {
        all_held(s) && !hosts_of(s).contains(&placed[0])
    });
    let second = hosts_of(&s).into_iter().find(|h| placed.contains(h)).expect("an original host left");
    m.kill_host(&second);
    let s = wait_status(&m.renter, &id, "repair after a second loss", Duration::from_secs(180), |s| {
        all_held(s) && !hosts_of(s).contains(&second)
    });
    assert_eq!(shards(&s).len(), 3);
    download_matches(&m.renter, &cid, &src, &work.path().join("after-two-losses"));
    let contracts = json(&m.renter, &["storage", "contracts", "list"]);
    let on_new_hosts = contracts["Contracts"].as_array().map_or(0, |a| {
        a.iter().filter(|c| c["State"] != "lost" && !placed.iter().any(|p| c["Peer"] == p.as_str())).count()
    });
    assert_eq!(on_new_hosts, 2, "two shards on fresh hosts under new contracts: {contracts:#}");
    // The repairs' contracts are paid from the same vault, and no token was made or lost: what left the vault
    // is on the hosts' addresses, the dead hosts' included.
    let every_host = || host_addrs.iter().map(|a| anvil.token_balance(&token, a)).sum::<u128>();
    let deadline = Instant::now() + Duration::from_secs(60);
    let new_hosts_cashed = loop {
        let cashed = host_addrs
            .iter()
            .filter(|a| !cashed.iter().any(|(old, _, _)| old == *a))
            .map(|a| anvil.token_balance(&token, a))
            .filter(|b| *b > 0)
            .count();
        if cashed >= 2 {
            break cashed;
        }
        assert!(Instant::now() < deadline, "the repair hosts never cashed a cheque on chain");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(new_hosts_cashed, 2);
    let (vault_end, hosts_end) = loop {
        let before = every_host();
        let vault_end = anvil.token_balance(&token, &vault);
        if every_host() == before {
            break (vault_end, before);
        }
    };
    assert_eq!(vault_end + hosts_end + back, DEPOSIT, "vault {vault_end} + hosts {hosts_end} + withdrawn {back}");
}

/// All market state is in RocksDB: a renter and a host that restart (new ports, same repos) resume their
/// contracts: challenges go on passing and cheques go on rising.
#[test]
fn a_restarted_renter_and_host_resume_every_contract() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut m = Market::start(3);
    let (cid, id, src) = upload(&m, work.path(), 1024 * 1024 + 3, 2, 1);
    let before = wait_status(&m.renter, &id, "a passed proof on every shard", Duration::from_secs(60), |s| {
        shards(s).iter().all(|x| x["ProofsPassed"].as_u64().unwrap_or(0) >= 1)
    });
    let host_peer = hosts_of(&before)[0].clone();
    let received = |d: &Daemon| -> u128 {
        json(d, &["cheque", "list"])["Received"]
            .as_array()
            .map_or(0, |a| a.iter().filter_map(|r| r["Cumulative"].as_str()?.parse::<u128>().ok()).sum())
    };
    let cheques_before = received(m.host_by_peer(&host_peer).expect("running").1);

    assert!(m.renter.restart(), "the renter stopped cleanly");
    assert!(m.host_by_peer(&host_peer).expect("running").1.restart(), "the host stopped cleanly");
    let passed =
        |s: &Value| -> Vec<u64> { shards(s).iter().map(|x| x["ProofsPassed"].as_u64().unwrap_or(0)).collect() };
    let base = passed(&before);
    let after = wait_status(&m.renter, &id, "proofs resumed on every shard", Duration::from_secs(90), |s| {
        passed(s).iter().zip(&base).all(|(now, then)| now >= &(then + 2))
    });
    assert!(all_held(&after), "{after:#}");
    assert_eq!(hosts_of(&after), hosts_of(&before), "no shard should have moved: {after:#}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while received(m.host_by_peer(&host_peer).expect("running").1) <= cheques_before {
        assert!(Instant::now() < deadline, "the restarted host received no new cheque");
        std::thread::sleep(Duration::from_millis(500));
    }
    download_matches(&m.renter, &cid, &src, &work.path().join("after-restart"));
}
