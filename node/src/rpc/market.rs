//! Storage-market commands: `storage/*`, `vault/*`, `cheque/*` (go-btfs's command names, JSON answers).
//! They need the daemon's market, which runs only with the network on.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use btfs_chunker::Cid;
use btfs_contracts_client::U256;
use serde_json::{Value, json};

use super::{ApiError, Args, RpcContext, blocking, single};
use crate::market::{Market, MarketError, UploadOptions};
use crate::repo::config::{parse_duration, parse_size};

pub(super) fn routes() -> Router<RpcContext> {
    Router::new()
        .route("/storage/announce", post(announce))
        .route("/storage/hosts", post(hosts))
        .route("/storage/upload", post(upload))
        .route("/storage/upload/status", post(upload_status))
        .route("/storage/contracts/list", post(contracts_list))
        .route("/storage/download", post(download))
        .route("/vault/balance", post(vault_balance))
        .route("/vault/deploy", post(vault_deploy))
        .route("/vault/deposit", post(vault_deposit))
        .route("/vault/withdraw", post(vault_withdraw))
        .route("/cheque/list", post(cheque_list))
        .route("/cheque/cash", post(cheque_cash))
}

/// Bad arguments are 400 with kubo's code 1; everything else a failed command.
fn api(e: MarketError) -> ApiError {
    match e {
        MarketError::Invalid(_) | MarketError::NoUpload(_) | MarketError::NoContract(_) => {
            ApiError::bad_request(e.to_string())
        }
        other => ApiError::from(other),
    }
}

fn market(ctx: &RpcContext) -> Result<Arc<Market>, ApiError> {
    ctx.node.market().cloned().map_err(api)
}

fn parse_cid(text: &str) -> Result<Cid, ApiError> {
    let bare = text.strip_prefix("/ipfs/").or_else(|| text.strip_prefix("/btfs/")).unwrap_or(text);
    Cid::try_from(bare).map_err(|e| ApiError::bad_request(format!("invalid CID {text:?}: {e}")))
}

fn amount(name: &str, text: &str) -> Result<U256, ApiError> {
    text.parse::<U256>().map_err(|e| ApiError::bad_request(format!("{name}: {text:?} is not an amount: {e}")))
}

fn duration_secs(name: &str, text: &str) -> Result<u64, ApiError> {
    parse_duration(text).map(|d| d.as_secs()).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
}

/// `storage announce`: changes host settings given as options, then (if enabled) announces host mode.
async fn announce(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let mut changes: Vec<(&str, Value)> = Vec::new();
    if let Some(on) = q.opt_bool(&["enable"])? {
        changes.push(("Storage.Host.Enabled", Value::Bool(on)));
    }
    for (flag, key) in [
        ("price", "Storage.Host.PricePerGiBDay"),
        ("max-storage", "Storage.Host.MaxStorage"),
        ("max-shard-size", "Storage.Host.MaxShardSize"),
        ("min-duration", "Storage.Host.MinDuration"),
        ("max-duration", "Storage.Host.MaxDuration"),
    ] {
        if let Some(v) = q.string(&[flag])? {
            changes.push((key, Value::String(v.to_string())));
        }
    }
    let node = ctx.node.clone();
    let settings = blocking(move || {
        for (key, value) in changes {
            node.config_set(key, value)?;
        }
        Ok(node.config_get("Storage.Host")?)
    })
    .await?;
    let enabled = settings.get("Enabled").and_then(Value::as_bool).unwrap_or(false);
    if enabled && let Ok(m) = ctx.node.market() {
        m.announce_host().await;
    }
    Ok(single(&settings))
}

/// `storage hosts`: hosts found in the DHT that quote for a shard of `shard-size` for `storage-length`.
async fn hosts(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let m = market(&ctx)?;
    let size = match q.string(&["shard-size"])? {
        Some(s) => parse_size(s).map_err(|e| ApiError::bad_request(format!("shard-size: {e}")))?,
        None => 1024 * 1024,
    };
    let length = duration_secs("storage-length", q.string(&["storage-length"])?.unwrap_or("30d"))?;
    let quotes = m.quotes(&[], size, length, None).await.map_err(api)?;
    Ok(single(&json!({ "Hosts": quotes })))
}

/// `storage upload <cid>`: starts an upload and answers its session id.
async fn upload(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let file = parse_cid(q.required("cid")?)?;
    let mut opts = UploadOptions::default();
    if let Some(k) = q.u64(&["data-shards"])? {
        opts.data_shards = usize::try_from(k).map_err(|_| ApiError::bad_request("data-shards is too large"))?;
    }
    if let Some(m) = q.u64(&["parity-shards"])? {
        opts.parity_shards = usize::try_from(m).map_err(|_| ApiError::bad_request("parity-shards is too large"))?;
    }
    if let Some(p) = q.string(&["piece-size"])? {
        let size = parse_size(p).map_err(|e| ApiError::bad_request(format!("piece-size: {e}")))?;
        opts.piece_size = usize::try_from(size).map_err(|_| ApiError::bad_request("piece-size is too large"))?;
    }
    if let Some(l) = q.string(&["storage-length"])? {
        opts.duration_secs = duration_secs("storage-length", l)?;
    }
    if let Some(p) = q.string(&["price"])? {
        opts.max_price = Some(amount("price", p)?);
    }
    if let Some(h) = q.string(&["hosts"])? {
        opts.hosts = h.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    }
    let id = market(&ctx)?.upload(file, opts).await.map_err(api)?;
    Ok(single(&json!({ "ID": id })))
}

async fn upload_status(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let id = q.required("session-id")?.to_string();
    let m = market(&ctx)?;
    Ok(single(&blocking(move || m.upload_status(&id).map_err(api)).await?))
}

async fn contracts_list(State(ctx): State<RpcContext>) -> Result<Response, ApiError> {
    let m = market(&ctx)?;
    let list = blocking(move || m.contracts().map_err(api)).await?;
    let out: Vec<Value> = list
        .iter()
        .map(|r| {
            let c = &r.contract.contract;
            json!({
                "ContractId": r.id,
                "Role": r.role,
                "State": r.state,
                "Peer": r.peer,
                "Renter": format!("{:#x}", c.renter),
                "Host": format!("{:#x}", c.host),
                "ShardCid": r.shard_cid,
                "ShardIndex": r.shard_index,
                "ShardSize": c.shard_size,
                "Start": c.start,
                "End": c.end,
                "Price": c.price.to_string(),
                "Upfront": c.upfront.to_string(),
                "Paid": r.paid,
                "ProofsPassed": r.proofs_passed,
                "ProofsFailed": r.proofs_failed,
                "Upload": r.upload,
                "Reason": r.reason,
            })
        })
        .collect();
    Ok(single(&json!({ "Contracts": out })))
}

/// `storage download <cid> -o <path>`: the daemon writes the rebuilt file to `path` (an absolute path on the
/// daemon's machine; the API is loopback-only by default).
async fn download(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let target = parse_cid(q.required("cid")?)?;
    let out = q.string(&["o", "output"])?.ok_or_else(|| ApiError::bad_request("argument \"output\" is required"))?;
    let out = std::path::PathBuf::from(out);
    if !out.is_absolute() {
        return Err(ApiError::bad_request("output must be an absolute path"));
    }
    let report = market(&ctx)?.download(target, &out).await.map_err(api)?;
    Ok(single(&report))
}

async fn vault_balance(State(ctx): State<RpcContext>) -> Result<Response, ApiError> {
    Ok(single(&market(&ctx)?.vault_balance().await.map_err(api)?))
}

async fn vault_deploy(State(ctx): State<RpcContext>) -> Result<Response, ApiError> {
    Ok(single(&market(&ctx)?.vault_deploy().await.map_err(api)?))
}

async fn vault_deposit(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let value = amount("amount", q.required("amount")?)?;
    Ok(single(&market(&ctx)?.vault_deposit(value).await.map_err(api)?))
}

async fn vault_withdraw(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let value = amount("amount", q.required("amount")?)?;
    Ok(single(&market(&ctx)?.vault_withdraw(value).await.map_err(api)?))
}

async fn cheque_list(State(ctx): State<RpcContext>) -> Result<Response, ApiError> {
    Ok(single(&market(&ctx)?.cheques().await.map_err(api)?))
}

async fn cheque_cash(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let vault = q.args().first().cloned();
    Ok(single(&market(&ctx)?.cheque_cash(vault).await.map_err(api)?))
}
