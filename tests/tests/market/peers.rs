//! Hostile storage-protocol peers, run in the test process on runtimes of their own.
//!
//! `Liar` is a host that speaks `/btfs/storage/1.0.0` well enough to win a contract (the cheapest quote, a
//! valid countersignature) but never fetches the shard. What it does next is its [`Conduct`]: claim the shard
//! is stored and answer every challenge with bytes it made up, or too late, or vanish before saying anything.
//! It records the cheques it is sent, so a test can check that the renter paid it nothing. `RawPeer` writes
//! whatever bytes a test gives it on a storage stream and reads what comes back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use btfs_contracts_client::wire::{self, HostAd, Request, Response, SignedHostAd};
use btfs_contracts_client::{NodeKey, SettlementKind, U256};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};

const PROTOCOL: StreamProtocol = StreamProtocol::new(wire::PROTOCOL);

/// How a [`Liar`] cheats once it has won a contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conduct {
    /// Says `Stored` at once, and answers every challenge promptly with made-up bytes.
    MadeUpProofs,
    /// Says `Stored` at once, and answers every challenge after `LATE`, past the tests' 2 s deadline.
    LateProofs,
    /// Countersigns, then shuts down (listener and connections) without ever saying `Stored`: a host that
    /// vanishes mid-upload.
    Vanishes,
}

/// How late a [`Conduct::LateProofs`] liar answers: past `Storage.ChallengeDeadline` in `market.rs`.
const LATE: Duration = Duration::from_secs(4);

pub(crate) struct Liar {
    /// Its TCP multiaddr with `/p2p/<peer id>`, for `--hosts`.
    pub(crate) addr: String,
    pub(crate) peer: String,
    /// Cumulative totals of the cheques it was sent.
    pub(crate) cheques: Arc<Mutex<Vec<U256>>>,
    /// Challenges it answered (wrongly).
    pub(crate) challenges: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

struct State {
    key: NodeKey,
    peer: PeerId,
    control: libp2p_stream::Control,
    cheques: Arc<Mutex<Vec<U256>>>,
    challenges: Arc<AtomicU64>,
    conduct: Conduct,
    /// Ends the swarm task, closing every connection and the listener.
    stop: Arc<tokio::sync::Notify>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Liar {
    pub(crate) fn start(conduct: Conduct) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let secp = libp2p::identity::secp256k1::Keypair::generate();
        let key = NodeKey::from_secret(&secp.secret().to_bytes()).expect("node key");
        let identity = libp2p::identity::Keypair::from(secp);
        let (swarm, addr) = runtime.block_on(listening_swarm(identity));
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().new_control();
        let stop = Arc::new(tokio::sync::Notify::new());
        runtime.spawn(drive(swarm, Some(stop.clone())));
        let state =
            Arc::new(State { key, peer, control, cheques: Arc::default(), challenges: Arc::default(), conduct, stop });
        let addr = format!("{addr}/p2p/{peer}");
        let mut incoming = state.control.clone().accept(PROTOCOL).expect("accept the storage protocol");
        let serving = state.clone();
        runtime.spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                tokio::spawn(serve(serving.clone(), peer, stream));
            }
        });
        Liar {
            addr,
            peer: state.peer.to_string(),
            cheques: state.cheques.clone(),
            challenges: state.challenges.clone(),
            _runtime: runtime,
        }
    }
}

type Swarm = libp2p::Swarm<libp2p_stream::Behaviour>;

/// A swarm with only libp2p-stream, listening on a loopback port; returns once the port is bound.
async fn listening_swarm(identity: libp2p::identity::Keypair) -> (Swarm, libp2p::Multiaddr) {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return (swarm, address);
        }
    }
}

/// Runs the swarm until `stop` (if any) is notified; dropping it then closes its connections and listener.
async fn drive(mut swarm: Swarm, stop: Option<Arc<tokio::sync::Notify>>) {
    let stopped = async {
        match stop {
            Some(stop) => stop.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            event = swarm.next() => if event.is_none() { return },
            () = &mut stopped => return,
        }
    }
}

/// A peer that sends raw bytes on storage-protocol streams. Its libp2p identity is a secp256k1 key, so what
/// it signs with `key` is signed by the sending peer.
pub(crate) struct RawPeer {
    pub(crate) key: NodeKey,
    /// Its peer id, as a host lists it beside the contracts it signed with this peer.
    pub(crate) peer: String,
    control: libp2p_stream::Control,
    runtime: tokio::runtime::Runtime,
}

/// What came back on a stream: a response, or the stream's end with no (whole) frame.
#[derive(Debug)]
pub(crate) enum Answer {
    Response(Box<Response>),
    Closed(String),
}

impl RawPeer {
    /// A new identity, connected to `addr` (a multiaddr ending in `/p2p/<peer id>`).
    pub(crate) fn connect(addr: &str) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let secp = libp2p::identity::secp256k1::Keypair::generate();
        let key = NodeKey::from_secret(&secp.secret().to_bytes()).expect("node key");
        let peer = libp2p::identity::PublicKey::from(secp.public().clone()).to_peer_id().to_string();
        let control = runtime.block_on(async {
            let (mut swarm, _) = listening_swarm(secp.into()).await;
            swarm.dial(addr.parse::<libp2p::Multiaddr>().expect("multiaddr")).expect("dial");
            loop {
                match swarm.select_next_some().await {
                    libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => break,
                    libp2p::swarm::SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial {addr}: {error}"),
                    _ => {}
                }
            }
            let control = swarm.behaviour().new_control();
            tokio::spawn(drive(swarm, None));
            control
        });
        RawPeer { key, peer, control, runtime }
    }

    /// Opens a storage stream to `peer`, writes `bytes` (and closes its side if `close`), then waits up to
    /// `wait` for a framed answer.
    pub(crate) fn send(&self, peer: &str, bytes: &[u8], close: bool, wait: Duration) -> Answer {
        let peer: PeerId = peer.parse().expect("peer id");
        let mut control = self.control.clone();
        self.runtime.block_on(async move {
            let mut stream = control.open_stream(peer, PROTOCOL).await.expect("open a storage stream");
            stream.write_all(bytes).await.expect("write");
            stream.flush().await.expect("flush");
            if close {
                let _ = stream.close().await;
            }
            match tokio::time::timeout(wait, read_frame(&mut stream)).await {
                Err(_) => Answer::Closed(format!("no answer within {wait:?}")),
                Ok(Err(e)) => Answer::Closed(e.to_string()),
                Ok(Ok(frame)) => Answer::Response(Box::new(wire::decode(&frame).expect("the host's answer decodes"))),
            }
        })
    }

    /// `request`, framed and sent.
    pub(crate) fn request(&self, peer: &str, request: &Request) -> Answer {
        self.send(peer, &frame(&wire::encode(request).expect("encode")), true, Duration::from_secs(10))
    }
}

/// `body` behind its 4-byte big-endian length.
pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

async fn read_frame(stream: &mut Stream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > wire::MAX_MESSAGE {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_frame(stream: &mut Stream, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

async fn serve(state: Arc<State>, renter: PeerId, mut stream: Stream) {
    let Ok(frame) = read_frame(&mut stream).await else { return };
    let Ok(request) = wire::decode::<Request>(&frame) else { return };
    let response = match request {
        Request::Quote { .. } => {
            let issued_at = now();
            let ad = HostAd {
                host: state.key.address(),
                peer_id: state.peer.to_string(),
                // Just under the honest hosts' price (`market.rs`), so that the renter picks this host first
                // and what it would owe is not rounded to nothing.
                price_per_gib_day: U256::from(999_999_999u64),
                max_shard_size: 1 << 30,
                free_space: 1 << 30,
                min_duration: 1,
                max_duration: 10 * 365 * 86_400,
                chain_id: 0,
                token: Default::default(),
                settlement: SettlementKind::None,
                issued_at,
                expires_at: issued_at + 600,
            };
            Response::Quote(SignedHostAd::sign(ad, &state.key).expect("sign the ad"))
        }
        Request::Propose { contract } => {
            let contract = contract.countersign(&state.key).expect("countersign");
            if state.conduct != Conduct::Vanishes {
                // Claim the shard is stored without fetching a byte of it.
                let notice = Request::Stored { contract_id: contract.contract.contract_id };
                tokio::spawn(notify(state.clone(), renter, notice));
            }
            Response::Accepted { contract }
        }
        Request::Challenge { .. } => {
            state.challenges.fetch_add(1, Ordering::Relaxed);
            if state.conduct == Conduct::LateProofs {
                tokio::time::sleep(LATE).await;
            }
            Response::Proof { path: vec![b"made-up node".to_vec()], leaf: vec![0x5a; 64 * 1024] }
        }
        Request::Pay { cheque, .. } => {
            let cumulative = cheque.cheque.cumulative_payout;
            state.cheques.lock().expect("not poisoned").push(cumulative);
            Response::ChequeAccepted { cumulative }
        }
        Request::Release { .. } | Request::Stored { .. } => Response::Ack,
    };
    let vanish = state.conduct == Conduct::Vanishes && matches!(response, Response::Accepted { .. });
    let Ok(body) = wire::encode(&response) else { return };
    let _ = write_frame(&mut stream, &body).await;
    let _ = stream.close().await;
    if vanish {
        // Long enough for the renter to have read the countersigned contract and recorded it: the host
        // vanishes mid-upload, not mid-proposal.
        tokio::time::sleep(Duration::from_secs(1)).await;
        state.stop.notify_one();
    }
}

async fn notify(state: Arc<State>, renter: PeerId, notice: Request) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Ok(mut stream) = state.control.clone().open_stream(renter, PROTOCOL).await else { return };
    let Ok(body) = wire::encode(&notice) else { return };
    if write_frame(&mut stream, &body).await.is_ok() {
        let _ = read_frame(&mut stream).await;
    }
}
