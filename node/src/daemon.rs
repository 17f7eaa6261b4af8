//! `btfs daemon`: the network, the RPC API and the HTTP gateway in one process, with ordered shutdown.
//!
//! Start-up order: open the repo (taking its lock), start the swarm and Bitswap, bind the API and the
//! gateway, write `$BTFS_PATH/api` and `$BTFS_PATH/gateway` with the addresses actually bound, print
//! "Daemon is ready". Shutdown (SIGINT, SIGTERM or `btfs shutdown`) runs the other way: stop accepting API
//! and gateway requests and let those in flight finish, stop the network, remove the `api` and `gateway`
//! files, flush the block store, release the lock.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, StreamProtocol};
use tokio_util::sync::CancellationToken;

use crate::Node;
use crate::net::{self, NetConfig};
use crate::online::Online;
use crate::repo::config::RoutingType;

/// Errors starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("config {key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("cannot bind the RPC API to {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// `/ip4/<ip>/tcp/<port>` (or ip6) as a socket address.
pub fn multiaddr_to_socket(addr: &str) -> Option<SocketAddr> {
    let ma: Multiaddr = addr.parse().ok()?;
    let mut iter = ma.iter();
    let ip: IpAddr = match iter.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Tcp(port) = iter.next()? else { return None };
    iter.next().is_none().then_some(SocketAddr::new(ip, port))
}

pub(crate) fn socket_to_multiaddr(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("/ip4/{ip}/tcp/{}", addr.port()),
        IpAddr::V6(ip) => format!("/ip6/{ip}/tcp/{}", addr.port()),
    }
}

fn net_config(node: &Node) -> Result<NetConfig, DaemonError> {
    let config = node.repo().config().typed().clone();
    let parse = |key: &'static str, list: &[String]| -> Result<Vec<Multiaddr>, DaemonError> {
        list.iter().map(|a| a.parse().map_err(|e| DaemonError::Config { key, reason: format!("{a:?}: {e}") })).collect()
    };
    let kad_protocol = StreamProtocol::try_from_owned(config.routing.kad_protocol.clone()).map_err(|e| {
        DaemonError::Config { key: "Routing.KadProtocol", reason: format!("{:?}: {e}", config.routing.kad_protocol) }
    })?;
    let reprovide_interval =
        config.reprovider.interval().map_err(|reason| DaemonError::Config { key: "Reprovider.Interval", reason })?;
    Ok(NetConfig {
        listen: parse("Addresses.Swarm", &config.addresses.swarm)?,
        bootstrap: parse("Bootstrap", &config.bootstrap)?,
        kad_protocol,
        dht_server: match config.routing.kind {
            RoutingType::Auto => None,
            RoutingType::Dhtserver => Some(true),
            RoutingType::Dhtclient => Some(false),
        },
        reprovide_interval,
        max_connections: 1024,
    })
}

/// Runs the daemon until it is told to stop. `api_routes` builds the RPC router for the node.
pub fn run(
    path: &Path,
    offline: bool,
    api_routes: impl FnOnce(Arc<Node>, CancellationToken) -> Router,
) -> Result<(), DaemonError> {
    let node = Arc::new(Node::open(path)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("btfs-daemon")
        .build()
        .map_err(DaemonError::Runtime)?;
    let shutdown = CancellationToken::new();
    let api_file = path.join("api");
    let gateway_file = path.join("gateway");
    let files = RuntimeFiles { api: &api_file, gateway: &gateway_file };
    let result = runtime.block_on(serve(node.clone(), offline, shutdown.clone(), files, api_routes));
    shutdown.cancel();
    // Give tasks a moment to see the cancellation, then stop the runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let _ = std::fs::remove_file(&api_file);
    let _ = std::fs::remove_file(&gateway_file);
    if let Err(e) = node.repo().store().sync_blocks() {
        eprintln!("warning: flushing the block store failed: {e}");
    }
    result
}

/// The files a running daemon writes into the repo, removed when it stops.
struct RuntimeFiles<'a> {
    /// The RPC API's multiaddr.
    api: &'a Path,
    /// The gateway's URL.
    gateway: &'a Path,
}

async fn serve(
    node: Arc<Node>,
    offline: bool,
    shutdown: CancellationToken,
    files: RuntimeFiles<'_>,
    api_routes: impl FnOnce(Arc<Node>, CancellationToken) -> Router,
) -> Result<(), DaemonError> {
    // Caught from here on: a signal during start-up stops the daemon as soon as it is serving.
    StopSignals::install()?.cancel_on_signal(shutdown.clone(), true);
    let config = node.repo().config().typed().clone();
    println!("Initializing daemon...");
    println!("btfs version: {}", env!("CARGO_PKG_VERSION"));
    println!("Repo: {}", node.repo().path().display());
    if offline {
        println!("Running in offline mode");
    } else {
        let net_config = net_config(&node)?;
        let keypair = node.repo().keypair().clone();
        let (network, bound) = net::start(node.clone(), keypair, net_config, shutdown.clone()).await?;
        let peer = network.peer_id;
        for addr in &bound {
            println!("Swarm listening on {addr}");
        }
        let protocols = network.swarm.protocols().await;
        let addresses = bound.iter().map(|a| format!("{a}/p2p/{peer}")).collect();
        let strategy = config.reprovider.strategy;
        node.go_online(Online {
            network: network.clone(),
            runtime: tokio::runtime::Handle::current(),
            addresses,
            protocols,
            strategy,
        });
        let market = crate::market::Market::start(node.clone(), network, shutdown.clone())
            .await
            .map_err(|e| DaemonError::Config { key: "Storage", reason: e.to_string() })?;
        let _ = node.market.set(market);
        let torrents = crate::bittorrent::Torrents::start(node.clone())
            .await
            .map_err(|e| DaemonError::Config { key: "BitTorrent", reason: e.to_string() })?;
        if let Some(addr) = torrents.listen_addr() {
            println!("BitTorrent listening on {addr}");
        }
        let _ = node.torrents.set(torrents);
        // Announce what is pinned again now; Kademlia re-publishes on its interval from here on.
        let announcer = node.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(pins) = announcer.pin_ls(crate::blocks::PinFilter::Recursive) {
                announcer.announce(pins.into_iter().map(|(cid, _)| cid).collect());
            }
        });
    }

    let api_addr = multiaddr_to_socket(&config.addresses.api).ok_or_else(|| DaemonError::Config {
        key: "Addresses.API",
        reason: format!("{:?} is not /ip4/<ip>/tcp/<port>", config.addresses.api),
    })?;
    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .map_err(|source| DaemonError::Bind { addr: api_addr.to_string(), source })?;
    let bound = listener.local_addr().map_err(|source| DaemonError::Bind { addr: api_addr.to_string(), source })?;
    let api_multiaddr = socket_to_multiaddr(bound);
    crate::repo::config::write_atomic(files.api, api_multiaddr.as_bytes())
        .map_err(|source| DaemonError::Write { path: files.api.display().to_string(), source })?;
    println!("RPC API server listening on {api_multiaddr}");

    let gateway_addr = multiaddr_to_socket(&config.addresses.gateway).ok_or_else(|| DaemonError::Config {
        key: "Addresses.Gateway",
        reason: format!("{:?} is not /ip4/<ip>/tcp/<port>", config.addresses.gateway),
    })?;
    let (gateway_listener, gateway_bound) = crate::gateway::bind(gateway_addr)
        .await
        .map_err(|source| DaemonError::Bind { addr: gateway_addr.to_string(), source })?;
    let gateway_url = format!("http://{gateway_bound}");
    crate::repo::config::write_atomic(files.gateway, gateway_url.as_bytes())
        .map_err(|source| DaemonError::Write { path: files.gateway.display().to_string(), source })?;
    println!("Gateway server listening on {}", socket_to_multiaddr(gateway_bound));
    let metrics = Arc::new(btfs_gateway::Metrics::new());
    let limits = config.gateway.limits().map_err(|reason| DaemonError::Config { key: "Gateway", reason })?;
    let gateway =
        tokio::spawn(crate::gateway::serve(node.clone(), gateway_listener, limits, metrics.clone(), shutdown.clone()));
    println!("Daemon is ready");

    // kubo serves the gateway's Prometheus metrics on the API port, at this path.
    let router = Router::new()
        .route("/debug/metrics/prometheus", axum::routing::get(move || async move { metrics.render() }))
        .merge(api_routes(node.clone(), shutdown.clone()));
    let api = axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
    // A failing gateway stops the daemon too, and the API's shutdown waits for the gateway's requests.
    shutdown.cancel();
    if let Some(t) = node.torrents.get() {
        t.shutdown().await;
    }
    let gateway = gateway.await;
    api.map_err(|source| DaemonError::Bind { addr: api_multiaddr, source })?;
    match gateway {
        Ok(result) => result.map_err(|source| DaemonError::Bind { addr: gateway_url, source }),
        Err(e) => Err(DaemonError::Bind { addr: gateway_url, source: std::io::Error::other(e) }),
    }
}

/// SIGINT and SIGTERM, registered when this is made. Until a handler is registered a SIGTERM takes its default
/// action and kills the process, so the daemon installs this before it tells anyone it is ready: a test or a
/// service manager may stop it the moment it says so.
pub(crate) struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Registers the handlers; must run inside the Tokio runtime.
    pub(crate) fn install() -> Result<Self, DaemonError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(DaemonError::Runtime)?,
                terminate: signal(SignalKind::terminate()).map_err(DaemonError::Runtime)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Cancels `shutdown` when either signal arrives, from a task of its own.
    pub(crate) fn cancel_on_signal(self, shutdown: CancellationToken, announce: bool) {
        tokio::spawn(async move {
            self.recv().await;
            if announce {
                println!("Received interrupt signal, shutting down...");
            }
            shutdown.cancel();
        });
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
