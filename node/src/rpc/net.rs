//! Network commands: `swarm/*`, `routing/*`, `bitswap/*`, in kubo's shapes. Without a network (`daemon
//! --offline`) they fail with kubo's "online mode" error.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use btfs_chunker::Cid;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_json::{Value, json};

use super::{ApiError, Args, RpcContext, single};
use crate::net::Network;

pub(super) fn routes() -> Router<RpcContext> {
    Router::new()
        .route("/swarm/peers", post(swarm_peers))
        .route("/swarm/connect", post(swarm_connect))
        .route("/swarm/disconnect", post(swarm_disconnect))
        .route("/swarm/addrs/listen", post(swarm_listen))
        .route("/routing/findprovs", post(routing_findprovs))
        .route("/routing/provide", post(routing_provide))
        .route("/routing/findpeer", post(routing_findpeer))
        .route("/bitswap/stat", post(bitswap_stat))
        .route("/bitswap/wantlist", post(bitswap_wantlist))
        .route("/bitswap/ledger", post(bitswap_ledger))
}

fn network(ctx: &RpcContext) -> Result<Network, ApiError> {
    ctx.node
        .online()
        .map(|o| o.network.clone())
        .ok_or_else(|| ApiError::failed("this command must be run in online mode. Try running 'btfs daemon' first"))
}

fn parse_cid(text: &str) -> Result<Cid, ApiError> {
    let bare = text.strip_prefix("/ipfs/").or_else(|| text.strip_prefix("/btfs/")).unwrap_or(text);
    Cid::try_from(bare).map_err(|e| ApiError::bad_request(format!("invalid CID {text:?}: {e}")))
}

fn parse_peer(text: &str) -> Result<PeerId, ApiError> {
    let bare = text.strip_prefix("/p2p/").unwrap_or(text);
    bare.parse().map_err(|e| ApiError::bad_request(format!("invalid peer ID {text:?}: {e}")))
}

/// A multiaddr ending in `/p2p/<id>`, and that id.
fn parse_peer_addr(text: &str) -> Result<(Multiaddr, PeerId), ApiError> {
    let addr: Multiaddr =
        text.parse().map_err(|e| ApiError::bad_request(format!("invalid multiaddr {text:?}: {e}")))?;
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((addr, peer)),
        _ => Err(ApiError::bad_request(format!("{text}: address must end in /p2p/<peer id>"))),
    }
}

/// kubo's routing query event (`Type` 4 is a provider, 2 a peer response, 0 a sent query).
fn query_event(kind: u8, responses: Value) -> String {
    let mut line = json!({ "Extra": "", "ID": "", "Responses": responses, "Type": kind }).to_string();
    line.push('\n');
    line
}

fn ndjson(body: String) -> Response {
    ([("content-type", "application/json"), ("x-chunked-output", "1")], body).into_response()
}

async fn swarm_peers(State(ctx): State<RpcContext>) -> Result<Response, ApiError> {
    let net = network(&ctx)?;
    let peers: Vec<Value> = net
        .swarm
        .peers()
        .await
        .into_iter()
        .map(|(peer, mut addr)| {
            // kubo's Addr is the transport address alone; one we dialled still ends with the peer's id.
            if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                addr.pop();
            }
            json!({ "Addr": addr.to_string(), "Peer": peer.to_string(), "Latency": "", "Muxer": "", "Direction": 0, "Streams": null })
        })
        .collect();
    Ok(single(&json!({ "Peers": peers })))
}

async fn swarm_connect(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let net = network(&ctx)?;
    let q = Args::from_uri(req.uri())?;
    let mut lines = Vec::new();
    for text in q.required_all("address")? {
        let (addr, _) = parse_peer_addr(text)?;
        match tokio::time::timeout(Duration::from_secs(30), net.swarm.connect(addr)).await {
            Ok(Ok(peer)) => lines.push(format!("connect {peer} success")),
            Ok(Err(e)) => return Err(ApiError::failed(format!("connect {text} failure: {e}"))),
            Err(_) => return Err(ApiError::failed(format!("connect {text} failure: timed out after 30 s"))),
        }
    }
    Ok(single(&json!({ "Strings": lines })))
}

async fn swarm_disconnect(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let net = network(&ctx)?;
    let q = Args::from_uri(req.uri())?;
    let mut lines = Vec::new();
    for text in q.required_all("address")? {
        let peer = match parse_peer_addr(text) {
            Ok((_, peer)) => peer,
            Err(_) => parse_peer(text)?,
        };
        if !net.swarm.disconnect(peer).await {
            return Err(ApiError::failed(format!("disconnect {peer} failure: not connected")));
        }
        lines.push(format!("disconnect {peer} success"));
    }
    Ok(single(&json!({ "Strings": lines })))
}

async fn swarm_listen(State(ctx): State<RpcContext>) -> Result<Response, ApiError> {
    let net = network(&ctx)?;
    let addrs: Vec<String> = net.swarm.listeners().await.iter().map(ToString::to_string).collect();
    Ok(single(&json!({ "Strings": addrs })))
}

async fn routing_findprovs(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let net = network(&ctx)?;
    let q = Args::from_uri(req.uri())?;
    let cid = parse_cid(q.required("key")?)?;
    let limit = q.u64(&["num-providers", "n"])?.unwrap_or(20).clamp(1, 1000) as usize;
    let mut found = net.swarm.find_providers(*cid.hash(), limit).await;
    let mut body = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(peer)) = tokio::time::timeout_at(deadline, found.recv()).await {
        let addrs: Vec<String> = net.swarm.find_peer_cached(peer).await.iter().map(ToString::to_string).collect();
        body.push_str(&query_event(4, json!([{ "ID": peer.to_string(), "Addrs": addrs }])));
    }
    Ok(ndjson(body))
}

async fn routing_provide(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let net = network(&ctx)?;
    let q = Args::from_uri(req.uri())?;
    let mut body = String::new();
    for text in q.required_all("key")? {
        let cid = parse_cid(text)?;
        let store_node = ctx.node.clone();
        let local = super::blocking(move || Ok(store_node.repo().store().has(&cid)?)).await?;
        if !local {
            return Err(ApiError::failed(format!("block {cid} not found locally, cannot provide")));
        }
        net.swarm.provide(*cid.hash()).await.map_err(ApiError::failed)?;
        body.push_str(&query_event(0, Value::Null));
    }
    Ok(ndjson(body))
}

async fn routing_findpeer(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let net = network(&ctx)?;
    let q = Args::from_uri(req.uri())?;
    let peer = parse_peer(q.required("peerID")?)?;
    let addrs = net.swarm.find_peer(peer).await;
    if addrs.is_empty() {
        return Err(ApiError::failed("routing: not found"));
    }
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    Ok(ndjson(query_event(2, json!([{ "ID": peer.to_string(), "Addrs": addrs }]))))
}

async fn bitswap_stat(State(ctx): State<RpcContext>) -> Result<Response, ApiError> {
    Ok(single(&network(&ctx)?.bitswap.stat().await))
}

async fn bitswap_wantlist(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let net = network(&ctx)?;
    let q = Args::from_uri(req.uri())?;
    let peer = q.string(&["peer", "p"])?.map(parse_peer).transpose()?;
    let keys: Vec<Value> = net.bitswap.wantlist(peer).await.iter().map(|c| json!({ "/": c.to_string() })).collect();
    Ok(single(&json!({ "Keys": keys })))
}

async fn bitswap_ledger(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let net = network(&ctx)?;
    let q = Args::from_uri(req.uri())?;
    let peer = parse_peer(q.required("peer")?)?;
    let ledger = net.bitswap.ledger(peer).await.unwrap_or_default();
    Ok(single(
        &json!({ "Peer": peer.to_string(), "Value": 0.0, "Sent": ledger.sent, "Recv": ledger.recv, "Exchanged": ledger.exchanged }),
    ))
}
