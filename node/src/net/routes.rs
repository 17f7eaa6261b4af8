//! RPC API handlers for the network commands: `swarm/*`, `routing/*`, `bitswap/*`. They answer in kubo's
//! shapes; without a network (`daemon --offline`) they answer kubo's "offline" error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use btfs_chunker::Cid;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_json::{Value, json};

use super::Network;
use crate::Node;

/// A kubo-style error body.
fn error(status: StatusCode, code: u8, message: impl Into<String>) -> Response {
    (status, Json(json!({ "Message": message.into(), "Code": code, "Type": "error" }))).into_response()
}

fn bad_arg(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, 1, message)
}

type Args = Query<Vec<(String, String)>>;

fn arg<'a>(args: &'a Args, name: &str) -> Option<&'a str> {
    args.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn required<'a>(args: &'a Args, what: &str) -> Result<&'a str, Response> {
    arg(args, "arg").ok_or_else(|| bad_arg(format!("argument {what:?} is required")))
}

fn network(node: &Node) -> Result<Network, Response> {
    node.online().map(|o| o.network.clone()).ok_or_else(|| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "this command must be run in online mode. Try running 'btfs daemon' first",
        )
    })
}

fn parse_cid(text: &str) -> Result<Cid, Response> {
    let text = text.strip_prefix("/ipfs/").unwrap_or(text);
    Cid::try_from(text).map_err(|e| bad_arg(format!("invalid CID {text:?}: {e}")))
}

fn parse_peer(text: &str) -> Result<PeerId, Response> {
    let text = text.strip_prefix("/p2p/").unwrap_or(text);
    text.parse().map_err(|e| bad_arg(format!("invalid peer ID {text:?}: {e}")))
}

/// The network routes, for any router state that can give an `Arc<Node>`.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Node>: FromRef<S>,
{
    let mut router = Router::new();
    for version in ["v0", "v1"] {
        router = router
            .route(&format!("/api/{version}/swarm/peers"), post(swarm_peers))
            .route(&format!("/api/{version}/swarm/connect"), post(swarm_connect))
            .route(&format!("/api/{version}/swarm/disconnect"), post(swarm_disconnect))
            .route(&format!("/api/{version}/swarm/addrs/listen"), post(swarm_listen))
            .route(&format!("/api/{version}/routing/findprovs"), post(routing_findprovs))
            .route(&format!("/api/{version}/routing/provide"), post(routing_provide))
            .route(&format!("/api/{version}/routing/findpeer"), post(routing_findpeer))
            .route(&format!("/api/{version}/bitswap/stat"), post(bitswap_stat))
            .route(&format!("/api/{version}/bitswap/wantlist"), post(bitswap_wantlist))
            .route(&format!("/api/{version}/bitswap/ledger"), post(bitswap_ledger));
    }
    router
}

async fn swarm_peers(State(node): State<Arc<Node>>) -> Response {
    let net = match network(&node) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let peers: Vec<Value> = net
        .swarm
        .peers()
        .await
        .into_iter()
        .map(|(peer, addr)| json!({ "Addr": addr.to_string(), "Peer": peer.to_string(), "Latency": "", "Muxer": "", "Direction": 0, "Streams": null }))
        .collect();
    Json(json!({ "Peers": peers })).into_response()
}

async fn swarm_connect(State(node): State<Arc<Node>>, args: Args) -> Response {
    let net = match network(&node) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let text = match required(&args, "address") {
        Ok(t) => t,
        Err(e) => return e,
    };
    let addr: Multiaddr = match text.parse() {
        Ok(a) => a,
        Err(e) => return bad_arg(format!("invalid multiaddr {text:?}: {e}")),
    };
    if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        return bad_arg(format!("{text}: address must end in /p2p/<peer id>"));
    }
    match tokio::time::timeout(Duration::from_secs(30), net.swarm.connect(addr)).await {
        Ok(Ok(peer)) => Json(json!({ "Strings": [format!("connect {peer} success")] })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, 0, format!("connect {text} failure: {e}")),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, 0, format!("connect {text} failure: timed out")),
    }
}

async fn swarm_disconnect(State(node): State<Arc<Node>>, args: Args) -> Response {
    let net = match network(&node) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let text = match required(&args, "address") {
        Ok(t) => t,
        Err(e) => return e,
    };
    let peer = match text.parse::<Multiaddr>() {
        Ok(addr) => match addr.iter().last() {
            Some(Protocol::P2p(peer)) => peer,
            _ => return bad_arg(format!("{text}: address must end in /p2p/<peer id>")),
        },
        Err(_) => match parse_peer(text) {
            Ok(p) => p,
            Err(e) => return e,
        },
    };
    if net.swarm.disconnect(peer).await {
        Json(json!({ "Strings": [format!("disconnect {peer} success")] })).into_response()
    } else {
        error(StatusCode::INTERNAL_SERVER_ERROR, 0, format!("disconnect {peer} failure: not connected"))
    }
}

async fn swarm_listen(State(node): State<Arc<Node>>) -> Response {
    match network(&node) {
        Ok(net) => {
            let addrs: Vec<String> = net.swarm.listeners().await.iter().map(ToString::to_string).collect();
            Json(json!({ "Strings": addrs })).into_response()
        }
        Err(e) => e,
    }
}

/// kubo's routing query event (`Type` 4 is "provider", 2 "peer response", 5 "value").
fn query_event(kind: u8, responses: Value) -> String {
    let mut line = json!({ "Extra": "", "ID": "", "Responses": responses, "Type": kind }).to_string();
    line.push('\n');
    line
}

async fn routing_findprovs(State(node): State<Arc<Node>>, args: Args) -> Response {
    let net = match network(&node) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let cid = match required(&args, "key").and_then(parse_cid) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let limit = arg(&args, "num-providers").and_then(|n| n.parse().ok()).unwrap_or(20usize);
    let mut rx = net.swarm.find_providers(*cid.hash(), limit).await;
    let mut body = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(peer)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let addrs: Vec<String> = net.swarm.find_peer_cached(peer).await.iter().map(ToString::to_string).collect();
        body.push_str(&query_event(4, json!([{ "ID": peer.to_string(), "Addrs": addrs }])));
    }
    ([("content-type", "application/json"), ("x-chunked-output", "1")], body).into_response()
}

async fn routing_provide(State(node): State<Arc<Node>>, args: Args) -> Response {
    let net = match network(&node) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let mut body = String::new();
    for (key, value) in &args.0 {
        if key != "arg" {
            continue;
        }
        let cid = match parse_cid(value) {
            Ok(c) => c,
            Err(e) => return e,
        };
        if !matches!(node.repo().store().has(&cid), Ok(true)) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, 0, format!("block {cid} not found locally, cannot provide"));
        }
        if let Err(e) = net.swarm.provide(*cid.hash()).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, 0, e);
        }
        body.push_str(&query_event(0, Value::Null));
    }
    if body.is_empty() {
        return bad_arg("argument \"key\" is required");
    }
    ([("content-type", "application/json")], body).into_response()
}

async fn routing_findpeer(State(node): State<Arc<Node>>, args: Args) -> Response {
    let net = match network(&node) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let peer = match required(&args, "peerID").and_then(parse_peer) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let addrs = net.swarm.find_peer(peer).await;
    if addrs.is_empty() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 0, "routing: not found");
    }
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let body = query_event(2, json!([{ "ID": peer.to_string(), "Addrs": addrs }]));
    ([("content-type", "application/json")], body).into_response()
}

async fn bitswap_stat(State(node): State<Arc<Node>>) -> Response {
    match network(&node) {
        Ok(net) => Json(net.bitswap.stat().await).into_response(),
        Err(e) => e,
    }
}

async fn bitswap_wantlist(State(node): State<Arc<Node>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let net = match network(&node) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let peer = match q.get("peer").map(|p| parse_peer(p)).transpose() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let keys: Vec<Value> = net.bitswap.wantlist(peer).await.iter().map(|c| json!({ "/": c.to_string() })).collect();
    Json(json!({ "Keys": keys })).into_response()
}

async fn bitswap_ledger(State(node): State<Arc<Node>>, args: Args) -> Response {
    let net = match network(&node) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let peer = match required(&args, "peer").and_then(parse_peer) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let ledger = net.bitswap.ledger(peer).await.unwrap_or_default();
    Json(json!({ "Peer": peer.to_string(), "Value": 0.0, "Sent": ledger.sent, "Recv": ledger.recv, "Exchanged": ledger.exchanged })).into_response()
}
