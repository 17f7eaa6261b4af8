//! The libp2p node: TCP (TLS or Noise, then Yamux with large frames) and QUIC, identify, ping, connection
//! limits, Kademlia with a persistent record store, and our Bitswap over libp2p-stream (outbound) and
//! `inbound` (inbound).
//!
//! The swarm is an actor: `SwarmHandle` sends `SwarmCommand`s over a bounded channel to one task that owns
//! the `Swarm` and also turns its events into replies, Bitswap peer events and Kademlia bookkeeping.

pub mod bitswap;
pub mod dht_store;
pub mod inbound;
pub mod mux;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use btfs_chunker::hash::Multihash;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, noise, ping, tcp};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::bitswap::Bitswap;
use self::dht_store::{DhtLimits, DhtStore};
use crate::Node;
use crate::api::AGENT_VERSION;

/// Errors starting the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("config {key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("network setup failed: {0}")]
    Setup(String),
}

/// Network settings, read from the config.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub kad_protocol: StreamProtocol,
    /// `Some(true)` server, `Some(false)` client, `None` automatic (server once reachable).
    pub dht_server: Option<bool>,
    pub reprovide_interval: Duration,
    pub max_connections: u32,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<DhtStore>,
    stream: libp2p_stream::Behaviour,
    inbound: inbound::Behaviour,
}

enum SwarmCommand {
    Dial { addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, String>> },
    DialPeer { peer: PeerId, reply: oneshot::Sender<Result<PeerId, String>> },
    Disconnect { peer: PeerId, reply: Option<oneshot::Sender<bool>> },
    Peers(oneshot::Sender<Vec<(PeerId, Multiaddr)>>),
    Listeners(oneshot::Sender<Vec<Multiaddr>>),
    Provide { key: RecordKey, reply: oneshot::Sender<Result<(), String>> },
    FindProviders { key: RecordKey, limit: usize, out: mpsc::Sender<PeerId> },
    FindPeer { peer: PeerId, reply: oneshot::Sender<Vec<Multiaddr>> },
    KnownAddrs { peer: PeerId, reply: oneshot::Sender<Vec<Multiaddr>> },
    Protocols(oneshot::Sender<Vec<String>>),
}

/// The cloneable handle to the swarm task.
#[derive(Clone, Debug)]
pub struct SwarmHandle {
    tx: mpsc::Sender<SwarmCommand>,
}

async fn ask<T>(tx: &mpsc::Sender<SwarmCommand>, make: impl FnOnce(oneshot::Sender<T>) -> SwarmCommand) -> Option<T> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).await.ok()?;
    rx.await.ok()
}

impl SwarmHandle {
    /// Dials an address (with or without `/p2p/<id>`); returns the peer once connected.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId, String> {
        ask(&self.tx, |reply| SwarmCommand::Dial { addr, reply }).await.unwrap_or(Err("node is shutting down".into()))
    }

    /// Dials a peer at addresses the routing table knows.
    pub async fn connect_peer(&self, peer: PeerId) -> Result<PeerId, String> {
        ask(&self.tx, |reply| SwarmCommand::DialPeer { peer, reply })
            .await
            .unwrap_or(Err("node is shutting down".into()))
    }

    pub async fn disconnect(&self, peer: PeerId) -> bool {
        ask(&self.tx, |reply| SwarmCommand::Disconnect { peer, reply: Some(reply) }).await.unwrap_or(false)
    }

    /// Disconnects without waiting (for use inside other actors).
    pub fn disconnect_detached(&self, peer: PeerId) {
        let _ = self.tx.try_send(SwarmCommand::Disconnect { peer, reply: None });
    }

    pub async fn peers(&self) -> Vec<(PeerId, Multiaddr)> {
        ask(&self.tx, SwarmCommand::Peers).await.unwrap_or_default()
    }

    pub async fn listeners(&self) -> Vec<Multiaddr> {
        ask(&self.tx, SwarmCommand::Listeners).await.unwrap_or_default()
    }

    pub async fn protocols(&self) -> Vec<String> {
        ask(&self.tx, SwarmCommand::Protocols).await.unwrap_or_default()
    }

    /// Announces that this node provides the block with multihash `mh`.
    pub async fn provide(&self, mh: Multihash) -> Result<(), String> {
        let key = RecordKey::new(&mh.to_bytes());
        ask(&self.tx, |reply| SwarmCommand::Provide { key, reply }).await.unwrap_or(Err("node is shutting down".into()))
    }

    /// Providers of `mh` as the DHT finds them (the channel closes when the search ends).
    pub async fn find_providers(&self, mh: Multihash, limit: usize) -> mpsc::Receiver<PeerId> {
        let (out, rx) = mpsc::channel(limit.max(1));
        let key = RecordKey::new(&mh.to_bytes());
        let _ = self.tx.send(SwarmCommand::FindProviders { key, limit, out }).await;
        rx
    }

    /// Addresses of `peer` known without asking the network (connections and the routing table).
    pub async fn find_peer_cached(&self, peer: PeerId) -> Vec<Multiaddr> {
        ask(&self.tx, |reply| SwarmCommand::KnownAddrs { peer, reply }).await.unwrap_or_default()
    }

    /// Addresses of `peer`, from connections, the routing table or a DHT walk.
    pub async fn find_peer(&self, peer: PeerId) -> Vec<Multiaddr> {
        ask(&self.tx, |reply| SwarmCommand::FindPeer { peer, reply }).await.unwrap_or_default()
    }
}

/// The running network: swarm and Bitswap handles.
#[derive(Clone)]
pub struct Network {
    pub swarm: SwarmHandle,
    /// Opens protocol streams (Bitswap's and the storage protocol's).
    pub control: libp2p_stream::Control,
    /// Accepts them.
    pub acceptor: inbound::Acceptor,
    pub bitswap: Bitswap,
    pub peer_id: PeerId,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

fn is_loopback_only(addrs: &[Multiaddr]) -> bool {
    addrs.iter().all(|a| a.iter().any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback())))
}

/// Starts the swarm and Bitswap; returns once every listen address is bound.
pub async fn start(
    node: Arc<Node>,
    keypair: Keypair,
    config: NetConfig,
    shutdown: CancellationToken,
) -> Result<(Network, Vec<Multiaddr>), NetError> {
    let peer_id = keypair.public().to_peer_id();
    let kad_protocol = config.kad_protocol.clone();
    let store = DhtStore::new(node.clone(), peer_id, DhtLimits::default());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            // Offered in this order: TLS (AES-GCM) between btfs nodes, Noise for Helia and others.
            (tls::Config::new, noise::Config::new),
            mux::Config::default,
        )
        .map_err(|e| NetError::Setup(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| {
            let mut kad_config = kad::Config::new(kad_protocol.clone());
            kad_config.set_provider_publication_interval(Some(config.reprovide_interval));
            kad_config.set_provider_record_ttl(Some(Duration::from_secs(48 * 3600)));
            kad_config.set_query_timeout(Duration::from_secs(60));
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(4))
                .with_max_pending_incoming(Some(128));
            Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(
                    identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                        .with_agent_version(AGENT_VERSION.into()),
                ),
                ping: ping::Behaviour::default(),
                kad: kad::Behaviour::with_config(key.public().to_peer_id(), store, kad_config),
                stream: libp2p_stream::Behaviour::new(),
                inbound: inbound::Behaviour::new(),
            }
        })
        .map_err(|e| NetError::Setup(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();

    match config.dht_server {
        Some(true) => swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server)),
        Some(false) => swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Client)),
        None => {}
    }
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen { addr: addr.to_string(), reason: e.to_string() })?;
    }
    // Wait until every listener has reported its bound address (port 0 resolved).
    let mut bound = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bound.len() < config.listen.len() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| NetError::Setup("listeners did not come up within 10 s".into()))?;
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                swarm.add_external_address(address.clone());
                bound.push(address);
            }
            SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                return Err(NetError::Listen { addr: "swarm".into(), reason: error.to_string() });
            }
            _ => {}
        }
    }

    let (tx, rx) = mpsc::channel(256);
    let handle = SwarmHandle { tx };
    let control = swarm.behaviour().stream.new_control();
    let acceptor = swarm.behaviour().inbound.acceptor();
    let bitswap = Bitswap::start(node.clone(), control.clone(), &acceptor, handle.clone(), shutdown.clone())
        .map_err(NetError::Setup)?;

    for addr in &config.bootstrap {
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            return Err(NetError::Config { key: "Bootstrap", reason: format!("{addr} has no /p2p/<peer id>") });
        };
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        let _ = swarm.dial(addr.clone());
    }
    if !config.bootstrap.is_empty() {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }

    let actor = SwarmActor {
        swarm,
        bitswap: bitswap.clone(),
        loopback_only: is_loopback_only(&config.listen),
        kad_protocol: config.kad_protocol,
        connections: HashMap::new(),
        dials: HashMap::new(),
        peer_dials: HashMap::new(),
        provides: HashMap::new(),
        searches: HashMap::new(),
        peer_searches: HashMap::new(),
    };
    tokio::spawn(actor.run(rx, shutdown));
    Ok((Network { swarm: handle, control, acceptor, bitswap, peer_id }, bound))
}

struct ProviderSearch {
    out: mpsc::Sender<PeerId>,
    seen: HashSet<PeerId>,
    limit: usize,
}

struct SwarmActor {
    swarm: Swarm<Behaviour>,
    bitswap: Bitswap,
    /// Listening on loopback only (the test profile): ignore other addresses peers report.
    loopback_only: bool,
    kad_protocol: StreamProtocol,
    /// Open connections per peer, with the remote address of each.
    connections: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, String>>>,
    peer_dials: HashMap<PeerId, Vec<oneshot::Sender<Result<PeerId, String>>>>,
    provides: HashMap<QueryId, oneshot::Sender<Result<(), String>>>,
    searches: HashMap<QueryId, ProviderSearch>,
    peer_searches: HashMap<QueryId, (PeerId, oneshot::Sender<Vec<Multiaddr>>)>,
}

impl SwarmActor {
    async fn run(mut self, mut rx: mpsc::Receiver<SwarmCommand>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event).await,
            }
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn on_command(&mut self, cmd: SwarmCommand) {
        match cmd {
            SwarmCommand::Dial { addr, reply } => {
                let opts = match addr.iter().last() {
                    Some(Protocol::P2p(peer)) if self.swarm.is_connected(&peer) => {
                        let _ = reply.send(Ok(peer));
                        return;
                    }
                    Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer).addresses(vec![addr.clone()]).build(),
                    _ => DialOpts::unknown_peer_id().address(addr.clone()).build(),
                };
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("dial {addr}: {e}")));
                    }
                }
            }
            SwarmCommand::DialPeer { peer, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                if let Some(waiting) = self.peer_dials.get_mut(&peer) {
                    // A dial to this peer is under way: wait for its outcome rather than failing.
                    waiting.push(reply);
                    return;
                }
                match self.swarm.dial(peer) {
                    Ok(()) => self.peer_dials.entry(peer).or_default().push(reply),
                    // Another part of the node is dialing it: its connection or error event answers us.
                    Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                        self.peer_dials.entry(peer).or_default().push(reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("dial {peer}: {e}")));
                    }
                }
            }
            SwarmCommand::Disconnect { peer, reply } => {
                let ok = self.swarm.disconnect_peer_id(peer).is_ok();
                if let Some(reply) = reply {
                    let _ = reply.send(ok);
                }
            }
            SwarmCommand::Peers(reply) => {
                let peers = self
                    .connections
                    .iter()
                    .filter_map(|(peer, conns)| conns.first().map(|(_, addr)| (*peer, addr.clone())))
                    .collect();
                let _ = reply.send(peers);
            }
            SwarmCommand::Listeners(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            SwarmCommand::Protocols(reply) => {
                let mut protocols: Vec<String> =
                    [bitswap::PROTOCOL_120, bitswap::PROTOCOL_110, bitswap::PROTOCOL_100, bitswap::PROTOCOL_LEGACY]
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                protocols.extend(["/ipfs/id/1.0.0".to_string(), "/ipfs/ping/1.0.0".to_string()]);
                protocols.push(self.kad_protocol.to_string());
                protocols.push(btfs_contracts_client::wire::PROTOCOL.to_string());
                protocols.sort();
                let _ = reply.send(protocols);
            }
            SwarmCommand::Provide { key, reply } => match self.swarm.behaviour_mut().kad.start_providing(key) {
                Ok(id) => {
                    self.provides.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(format!("provider record store: {e:?}")));
                }
            },
            SwarmCommand::FindProviders { key, limit, out } => {
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.searches.insert(id, ProviderSearch { out, seen: HashSet::new(), limit });
            }
            SwarmCommand::KnownAddrs { peer, reply } => {
                let _ = reply.send(self.known_addrs(peer));
            }
            SwarmCommand::FindPeer { peer, reply } => {
                let known = self.known_addrs(peer);
                if !known.is_empty() {
                    let _ = reply.send(known);
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.peer_searches.insert(id, (peer, reply));
            }
        }
    }

    fn known_addrs(&mut self, peer: PeerId) -> Vec<Multiaddr> {
        let mut addrs: Vec<Multiaddr> =
            self.connections.get(&peer).map(|c| c.iter().map(|(_, a)| a.clone()).collect()).unwrap_or_default();
        if let Some(bucket) = self.swarm.behaviour_mut().kad.kbucket(peer) {
            for entry in bucket.iter() {
                if *entry.node.key.preimage() == peer {
                    addrs.extend(entry.node.value.iter().cloned());
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        addrs
    }

    async fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, num_established, endpoint, .. } => {
                let addr = endpoint.get_remote_address().clone();
                self.connections.entry(peer_id).or_default().push((connection_id, addr));
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                for reply in self.peer_dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    self.bitswap.send(bitswap::Command::PeerConnected(peer_id)).await;
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, .. } => {
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.retain(|(id, _)| *id != connection_id);
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    self.bitswap.send(bitswap::Command::PeerDisconnected(peer_id)).await;
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
                if let Some(peer) = peer_id {
                    for reply in self.peer_dials.remove(&peer).unwrap_or_default() {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                self.swarm.add_external_address(address);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                self.bitswap.peer_agent(peer_id, &info.agent_version);
                let speaks_kad = info.protocols.contains(&self.kad_protocol);
                if speaks_kad {
                    for addr in info.listen_addrs {
                        if self.loopback_only && !is_loopback_only(std::slice::from_ref(&addr)) {
                            continue;
                        }
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            _ => {}
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed { id, result, step, .. } = event else { return };
        match result {
            QueryResult::StartProviding(result) => {
                if let Some(reply) = self.provides.remove(&id) {
                    // Having nobody to tell yet is not a failure: the record is stored and re-published.
                    let _ = reply.send(match result {
                        Ok(_) => Ok(()),
                        Err(kad::AddProviderError::Timeout { .. }) => Ok(()),
                    });
                }
            }
            QueryResult::GetProviders(result) => {
                let done = {
                    let Some(search) = self.searches.get_mut(&id) else { return };
                    if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                        for peer in providers {
                            if search.seen.insert(peer) {
                                let _ = search.out.try_send(peer);
                            }
                        }
                    }
                    step.last || search.seen.len() >= search.limit || search.out.is_closed()
                };
                if done {
                    self.searches.remove(&id);
                    if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        query.finish();
                    }
                }
            }
            QueryResult::GetClosestPeers(result) => {
                let Some((target, reply)) = self.peer_searches.remove(&id) else { return };
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                let addrs = peers.into_iter().find(|p| p.peer_id == target).map(|p| p.addrs).unwrap_or_default();
                let _ = reply.send(addrs);
                if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    query.finish();
                }
            }
            _ => {}
        }
    }
}
