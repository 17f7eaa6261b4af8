//! Nodes in one process, talking over real libp2p on 127.0.0.1: Bitswap transfers, DHT provider search, and
//! a provider that goes away in the middle of a transfer.

use std::sync::Arc;
use std::time::Duration;

use btfs_chunker::Cid;
use btfs_node::Node;
use btfs_node::add::{AddEvents, AddInput, AddOptions, Added};
use btfs_node::net::{self, NetConfig, Network};
use btfs_node::online::Online;
use btfs_node::repo::InitProfile;
use btfs_node::repo::config::ProvideStrategy;
use libp2p::{Multiaddr, StreamProtocol};
use tokio_util::sync::CancellationToken;

struct TestNode {
    node: Arc<Node>,
    net: Network,
    addr: Multiaddr,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start(bootstrap: Vec<Multiaddr>) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Arc::new(Node::init(dir.path(), InitProfile::Test).expect("init"));
    let config = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootstrap,
        kad_protocol: StreamProtocol::new("/btfs/kad/1.0.0"),
        dht_server: Some(true),
        reprovide_interval: Duration::from_secs(3600),
        max_connections: 64,
    };
    let stop = CancellationToken::new();
    let keypair = node.repo().keypair().clone();
    let (net, bound) = net::start(node.clone(), keypair, config, stop.clone()).await.expect("network");
    let addr = bound[0].clone().with(libp2p::multiaddr::Protocol::P2p(net.peer_id));
    node.go_online(Online {
        network: net.clone(),
        runtime: tokio::runtime::Handle::current(),
        addresses: vec![addr.to_string()],
        protocols: Vec::new(),
        strategy: ProvideStrategy::Roots,
    });
    TestNode { node, net, addr, stop, _dir: dir }
}

struct Quiet;

impl AddEvents for Quiet {
    fn added(&mut self, _entry: &Added) {}
}

fn options(profile: &str) -> AddOptions {
    let import =
        btfs_chunker::import::Options { profile: Some(profile.parse().expect("profile")), ..Default::default() };
    AddOptions { import, pin: true, ..Default::default() }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn add(node: &Arc<Node>, data: Vec<u8>, opts: AddOptions) -> Cid {
    let node = node.clone();
    tokio::task::spawn_blocking(move || {
        let input = AddInput::Stream { name: Some("f".into()), reader: Box::new(std::io::Cursor::new(data)) };
        node.add(vec![input], &opts, &mut Quiet).expect("add")[0].cid
    })
    .await
    .expect("join")
}

async fn cat(node: &Arc<Node>, cid: Cid) -> Result<Vec<u8>, String> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        node.cat(&cid.to_string(), 0, None, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitswap_moves_a_multi_block_file_between_two_nodes() {
    let a = start(Vec::new()).await;
    let b = start(Vec::new()).await;
    for profile in ["unixfs-v0-2015", "unixfs-v1-2025"] {
        let data = random_bytes(6 * 1024 * 1024 + 123, profile.len() as u64);
        let opts = options(profile);
        let cid = add(&a.node, data.clone(), opts).await;
        b.net.swarm.connect(a.addr.clone()).await.expect("connect");
        assert_eq!(cat(&b.node, cid).await.expect("cat over bitswap"), data, "{profile}");
        assert!(b.node.repo().store().get_local(&cid).expect("read").is_some(), "stored locally after the fetch");
    }
    let stat = a.net.bitswap.stat().await;
    assert!(stat.blocks_sent > 20, "A served the blocks: {stat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_finds_content_through_the_dht_alone_and_survives_a_provider_leaving() {
    let boot = start(Vec::new()).await;
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start(vec![boot.addr.clone()]).await);
    }
    // Let the routing tables fill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let data = random_bytes(64 * 1024 * 1024, 7);
    let cid = add(&nodes[0].node, data.clone(), options("unixfs-v0-2015")).await;
    nodes[0].net.swarm.provide(*cid.hash()).await.expect("provide");

    // nodes[3] never connects to nodes[0] directly: it must find it in the DHT.
    let got = cat(&nodes[3].node, cid).await.expect("fetch through the DHT");
    assert_eq!(got, data);
    nodes[3].net.swarm.provide(*cid.hash()).await.expect("provide");

    // nodes[2] fetches from both providers; nodes[0] leaves in the middle.
    let fetch = tokio::spawn({
        let n = nodes[2].node.clone();
        async move { cat(&n, cid).await }
    });
    while nodes[2].net.bitswap.stat().await.blocks_received < 10 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(!fetch.is_finished(), "the provider must leave while the transfer is under way");
    nodes[0].stop.cancel();
    let got = tokio::time::timeout(Duration::from_secs(120), fetch).await.expect("no hang").expect("join");
    assert_eq!(got.expect("fetch survives a provider leaving"), data);
}

/// A peer that speaks raw bytes on Bitswap streams: our own minimal swarm with only libp2p-stream.
async fn hostile_peer() -> (libp2p::Swarm<libp2p_stream::Behaviour>, libp2p_stream::Control) {
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let control = swarm.behaviour().new_control();
    (swarm, control)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bitswap_peers_are_refused_and_honest_ones_still_served() {
    use futures::{AsyncWriteExt, StreamExt};

    let a = start(Vec::new()).await;
    let data = random_bytes(3 * 1024 * 1024, 11);
    let cid = add(&a.node, data.clone(), options("unixfs-v0-2015")).await;

    let (mut swarm, control) = hostile_peer().await;
    swarm.dial(a.addr.clone()).expect("dial");
    // Wait for the connection, then keep the swarm running and note why any connection to A closes, so a write
    // that fails says whether A hung up (and why) or the connection broke.
    let closed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    loop {
        match swarm.next().await.expect("swarm runs") {
            libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => break,
            libp2p::swarm::SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial A: {error}"),
            _ => {}
        }
    }
    tokio::spawn({
        let closed = closed.clone();
        async move {
            while let Some(event) = swarm.next().await {
                if let libp2p::swarm::SwarmEvent::ConnectionClosed { cause, num_established, .. } = event {
                    closed.lock().expect("not poisoned").push(format!("{cause:?} ({num_established} left)"));
                }
            }
        }
    });
    let why = |e: std::io::Error| -> ! {
        panic!("write to A: {e}; connections closed so far: {:?}", closed.lock().expect("not poisoned"));
    };
    let a_id = a.net.peer_id;
    let bitswap = libp2p::StreamProtocol::new("/ipfs/bitswap/1.2.0");
    let open = || {
        let mut control = control.clone();
        let bitswap = bitswap.clone();
        async move { control.open_stream(a_id, bitswap).await.expect("open a bitswap stream") }
    };

    // 1. A length prefix far over the 4 MiB cap: refused before anything is allocated.
    let mut s = open().await;
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 0x0f]).await.unwrap_or_else(|e| why(e));
    // 2. A body that is not a Bitswap message.
    let mut s2 = open().await;
    s2.write_all(&[5, 0x0a, 0x05, 0x0a, 0xff, 0xff]).await.unwrap_or_else(|e| why(e));
    // 3. An unsolicited block that claims a CID it does not hash to: it matches nothing and is not stored.
    let fake = btfs_chunker::bitswap::Message {
        blocks: vec![(cid, b"not the real bytes".to_vec().into())],
        ..Default::default()
    }
    .encode(btfs_chunker::bitswap::Version::V120);
    let mut s3 = open().await;
    let mut framed = Vec::new();
    btfs_chunker::varint::encode(fake.len() as u64, &mut framed);
    framed.extend_from_slice(&fake);
    s3.write_all(&framed).await.unwrap_or_else(|e| why(e));
    // 4. A stream opened and never written to or read from, and a flood of wants for blocks A lacks.
    let _idle = open().await;
    let flood = btfs_chunker::bitswap::Message {
        wantlist: (0..8000u32)
            .map(|i| {
                let mh = btfs_chunker::hash::HashFunction::Sha2_256.digest(&i.to_le_bytes());
                btfs_chunker::bitswap::Entry::want(
                    Cid::new_v1(btfs_chunker::block::RAW, mh),
                    btfs_chunker::bitswap::WantType::Block,
                    false,
                )
            })
            .collect(),
        ..Default::default()
    }
    .encode(btfs_chunker::bitswap::Version::V120);
    let mut s4 = open().await;
    let mut framed = Vec::new();
    btfs_chunker::varint::encode(flood.len() as u64, &mut framed);
    framed.extend_from_slice(&flood);
    for _ in 0..5 {
        s4.write_all(&framed).await.unwrap_or_else(|e| why(e));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The real block is still the real block, and an honest peer is still served.
    assert_eq!(cat(&a.node, cid).await.expect("local cat"), data);
    let b = start(Vec::new()).await;
    b.net.swarm.connect(a.addr.clone()).await.expect("connect");
    assert_eq!(cat(&b.node, cid).await.expect("honest fetch"), data);
    let want_len = a.net.bitswap.wantlist(Some(b.net.peer_id)).await.len();
    assert_eq!(want_len, 0, "the honest peer's wantlist is served and emptied");
    let stat = a.net.bitswap.stat().await;
    assert_eq!(stat.blocks_received, 1, "only the fake block arrived at A: {stat:?}");
    assert_eq!(stat.dup_blks_received, 1, "and it was dropped as unwanted");
}

/// A peer that speaks only Bitswap 1.0.0 gets its blocks in 1.0.0's framing. Our writer first reads blocks for
/// 1.2.0 (it has no stream yet), finds the peer speaks 1.0.0 when it opens one, and reads them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitswap_1_0_0_peer_is_served_in_its_framing() {
    use btfs_chunker::bitswap::{Entry, Message, Version, WantType};
    use futures::{AsyncWriteExt, StreamExt};

    let a = start(Vec::new()).await;
    let data = random_bytes(100_000, 5);
    let cid = add(&a.node, data.clone(), options("unixfs-v0-2015")).await;
    assert_eq!(cid.version(), cid::Version::V0, "a one-block v0 file: its root block holds the data");
    let block = a.node.repo().store().get_local(&cid).expect("read").expect("stored");

    let (mut swarm, mut control) = hostile_peer().await;
    let old = StreamProtocol::new("/ipfs/bitswap/1.0.0");
    let mut incoming = control.accept(old.clone()).expect("accept 1.0.0");
    swarm.dial(a.addr.clone()).expect("dial");
    loop {
        match swarm.next().await.expect("swarm runs") {
            libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => break,
            libp2p::swarm::SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial A: {error}"),
            _ => {}
        }
    }
    tokio::spawn(async move { while swarm.next().await.is_some() {} });

    let want = Message { wantlist: vec![Entry::want(cid, WantType::Block, false)], ..Default::default() }
        .encode(Version::V100);
    let mut framed = Vec::new();
    btfs_chunker::varint::encode(want.len() as u64, &mut framed);
    framed.extend_from_slice(&want);
    let mut out = control.open_stream(a.net.peer_id, old).await.expect("open a 1.0.0 stream");
    out.write_all(&framed).await.expect("send the want");

    let (_, mut stream) = tokio::time::timeout(Duration::from_secs(20), incoming.next())
        .await
        .expect("A opens a stream back within 20 s")
        .expect("a stream");
    let budget = Arc::new(tokio::sync::Semaphore::new(net::bitswap::wire::INBOUND_BUDGET_KIB));
    let body = tokio::time::timeout(Duration::from_secs(20), net::bitswap::wire::read_message(&mut stream, &budget))
        .await
        .expect("A answers within 20 s")
        .expect("a message")
        .expect("not the end of the stream");
    // 1.0.0 carries a block as field 2 with its bytes alone; the CID is the hash of those bytes.
    let mut expected = Vec::new();
    btfs_chunker::varint::encode((2 << 3) | 2, &mut expected);
    btfs_chunker::varint::encode(block.len() as u64, &mut expected);
    expected.extend_from_slice(&block);
    assert_eq!(body, expected, "one block, in 1.0.0's framing");
    let msg = Message::decode(&body).expect("decode");
    assert_eq!(msg.blocks.len(), 1);
    assert_eq!((msg.blocks[0].0, &msg.blocks[0].1[..]), (cid, &block[..]));
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Streams {
    open: libp2p_stream::Behaviour,
    inbound: net::inbound::Behaviour,
}

fn streams_swarm() -> libp2p::Swarm<Streams> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|_| Streams { open: libp2p_stream::Behaviour::new(), inbound: net::inbound::Behaviour::new() })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Streams that arrive together, before the accepting task takes any, all reach it. (libp2p-stream's own
/// `accept` keeps one and resets the others: a Bitswap message or a storage request lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_inbound_streams_waits_for_the_acceptor() {
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    const BURST: usize = 40;
    let protocol = StreamProtocol::new("/btfs/test-burst/1.0.0");

    let mut receiver = streams_swarm();
    let mut incoming =
        receiver.behaviour().inbound.acceptor().accept(std::slice::from_ref(&protocol), 64).expect("accept");
    receiver.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = receiver.select_next_some().await {
            break address;
        }
    };
    let receiver_id = *receiver.local_peer_id();
    tokio::spawn(async move { while receiver.next().await.is_some() {} });

    let mut sender = streams_swarm();
    let control = sender.behaviour().open.new_control();
    sender.dial(addr).expect("dial");
    loop {
        match sender.select_next_some().await {
            libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => break,
            libp2p::swarm::SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial: {error}"),
            _ => {}
        }
    }
    tokio::spawn(async move { while sender.next().await.is_some() {} });

    // Open the whole burst, each stream carrying its number, without the receiver taking any.
    let mut writers = Vec::new();
    for i in 0..BURST {
        let mut control = control.clone();
        let protocol = protocol.clone();
        writers.push(tokio::spawn(async move {
            let mut s = control.open_stream(receiver_id, protocol).await.map_err(|e| format!("open {i}: {e}"))?;
            s.write_all(&[i as u8]).await.map_err(|e| format!("write {i}: {e}"))?;
            s.close().await.map_err(|e| format!("close {i}: {e}"))
        }));
    }
    for w in writers {
        w.await.expect("join").expect("the sender's side of every stream succeeds");
    }

    let mut seen = Vec::new();
    for _ in 0..BURST {
        let next = tokio::time::timeout(Duration::from_secs(10), incoming.recv()).await;
        let mut got = next.expect("every stream of the burst is queued").expect("queue open");
        assert_eq!(got.protocol, protocol);
        let mut byte = [0u8; 1];
        got.stream.read_exact(&mut byte).await.expect("the queued stream is still readable");
        seen.push(byte[0] as usize);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..BURST).collect::<Vec<_>>());
}
