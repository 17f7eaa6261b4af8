//! Store commands: `pin add|rm|ls`, `block get|put|stat|rm`, `dag import|export`, `repo stat|verify|gc`.

use std::io::{Read, Write};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use btfs_chunker::Cid;
use serde::Serialize;
use serde_json::json;

use super::{ApiError, Args, Output, RpcContext, blocking, respond, single, upload};
use crate::api::codec_from_name;
use crate::blocks::{MAX_BLOCK_SIZE, PinFilter, corrupt_message};

pub(super) fn routes() -> Router<RpcContext> {
    Router::new()
        .route("/pin/add", post(pin_add))
        .route("/pin/rm", post(pin_rm))
        .route("/pin/ls", post(pin_ls))
        .route("/block/get", post(block_get))
        // A block part is read up to the block limit; the request as a whole streams.
        .route("/block/put", upload::route(block_put))
        .route("/block/stat", post(block_stat))
        .route("/block/rm", post(block_rm))
        .route("/dag/import", upload::route(dag_import))
        .route("/dag/export", post(dag_export))
        .route("/repo/stat", post(repo_stat))
        .route("/repo/verify", post(repo_verify))
        .route("/repo/gc", post(repo_gc))
}

/// kubo writes a CID as the IPLD link `{"/": "<cid>"}` where its type is a `cid.Cid`.
fn link(cid: &Cid) -> serde_json::Value {
    json!({ "/": cid.to_string() })
}

async fn pin_add(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let paths = q.required_all("ipfs-path")?.to_vec();
    let recursive = q.bool(&["recursive", "r"], true)?;
    let pins = blocking(move || {
        let mut pinned = Vec::with_capacity(paths.len());
        for path in &paths {
            let cid = ctx.node.resolve(path)?;
            ctx.node.pin_add(&cid, recursive)?;
            pinned.push(cid.to_string());
        }
        Ok(pinned)
    })
    .await?;
    Ok(single(&json!({ "Pins": pins })))
}

async fn pin_rm(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let paths = q.required_all("ipfs-path")?.to_vec();
    let pins = blocking(move || {
        let mut unpinned = Vec::with_capacity(paths.len());
        for path in &paths {
            let cid = ctx.node.resolve(path)?;
            ctx.node.pin_rm(&cid)?;
            unpinned.push(cid.to_string());
        }
        Ok(unpinned)
    })
    .await?;
    Ok(single(&json!({ "Pins": pins })))
}

/// `pin ls --type`.
pub(crate) fn pin_filter(kind: &str) -> Result<PinFilter, ApiError> {
    match kind {
        "all" => Ok(PinFilter::All),
        "recursive" => Ok(PinFilter::Recursive),
        "direct" => Ok(PinFilter::Direct),
        "indirect" => Ok(PinFilter::Indirect),
        other => Err(ApiError::failed(format!(
            "invalid type '{other}', must be one of {{direct, indirect, recursive, all}}"
        ))),
    }
}

async fn pin_ls(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let filter = pin_filter(q.string(&["type", "t"])?.unwrap_or("all"))?;
    let stream = q.bool(&["stream", "s"], false)?;
    let paths = q.args().to_vec();
    let pins = blocking(move || {
        if paths.is_empty() {
            return Ok(ctx.node.pin_ls(filter)?);
        }
        let cids = paths.iter().map(|p| ctx.node.resolve(p)).collect::<Result<Vec<_>, _>>()?;
        let status = ctx.node.pin_status(&cids, filter)?;
        let mut out = Vec::with_capacity(cids.len());
        for ((cid, kind), path) in cids.into_iter().zip(status).zip(&paths) {
            let kind = kind.ok_or_else(|| ApiError::failed(format!("path '{path}' is not pinned")))?;
            out.push((cid, kind));
        }
        Ok(out)
    })
    .await?;
    if stream {
        return Ok(respond(Output::channel(), move |out| {
            for (cid, kind) in pins {
                out.json(&json!({ "Cid": cid.to_string(), "Type": kind }))?;
            }
            Ok(())
        })
        .await);
    }
    let keys: serde_json::Map<String, serde_json::Value> =
        pins.iter().map(|(c, k)| (c.to_string(), json!({ "Type": k, "Name": "" }))).collect();
    Ok(single(&json!({ "Keys": keys })))
}

async fn block_get(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let path = q.required("cid")?.to_string();
    let data = blocking(move || {
        let cid = ctx.node.resolve(&path)?;
        Ok(ctx.node.block_get(&cid)?)
    })
    .await?;
    let len = data.len() as u64;
    Ok(respond(Output::stream("text/plain").length(len), move |out| Ok(out.write_all(&data)?)).await)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BlockStat {
    key: String,
    size: usize,
}

async fn block_stat(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let path = q.required("cid")?.to_string();
    let stat = blocking(move || {
        let cid = ctx.node.resolve(&path)?;
        let data = ctx.node.block_get(&cid)?;
        Ok(BlockStat { key: cid.to_string(), size: data.len() })
    })
    .await?;
    Ok(single(&stat))
}

async fn block_put(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let (codec, v0) = match q.string(&["format", "f"])? {
        Some("v0") => (btfs_chunker::dagpb::CODEC, true),
        Some(format) => (codec_from_name(format)?, false),
        None => (codec_from_name(q.string(&["cid-codec"])?.unwrap_or("raw"))?, false),
    };
    let hash = q.string(&["mhtype"])?.unwrap_or("sha2-256").parse()?;
    if q.i64(&["mhlen"])?.is_some_and(|l| l != -1) {
        return Err(ApiError::failed("custom multihash lengths (mhlen) are not supported"));
    }
    let pin = q.bool(&["pin"], false)?;
    let (mut parts, pump) = upload::start(req, "data").await?;
    Ok(respond(Output::channel().upload(pump), move |out| {
        while let Some((_, reader)) = parts.next_file()? {
            let mut data = Vec::new();
            reader.take(MAX_BLOCK_SIZE as u64 + 1).read_to_end(&mut data)?;
            let size = data.len();
            let cid = if pin {
                ctx.node.block_put_pinned(data, codec, hash, v0)?
            } else {
                ctx.node.block_put(data, codec, hash, v0)?
            };
            out.json(&BlockStat { key: cid.to_string(), size })?;
        }
        Ok(())
    })
    .await)
}

async fn block_rm(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let paths = q.required_all("cid")?.to_vec();
    let force = q.bool(&["force", "f"], false)?;
    let quiet = q.bool(&["quiet", "q"], false)?;
    let node = ctx.node.clone();
    let cids = blocking(move || Ok(paths.iter().map(|p| node.resolve(p)).collect::<Result<Vec<_>, _>>()?)).await?;
    Ok(respond(Output::channel(), move |out| {
        for cid in cids {
            match ctx.node.block_rm(&cid) {
                Ok(()) if quiet => {}
                Ok(()) => out.json(&json!({ "Hash": cid.to_string() }))?,
                Err(crate::blocks::BlockError::NotFound { .. }) if force => {}
                Err(e) => out.json(&json!({ "Hash": cid.to_string(), "Error": ApiError::from(e).message() }))?,
            }
        }
        Ok(())
    })
    .await)
}

async fn dag_import(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let pin_roots = q.bool(&["pin-roots"], true)?;
    let silent = q.bool(&["silent"], false)?;
    let stats = q.bool(&["stats"], false)?;
    let (mut parts, pump) = upload::start(req, "path").await?;
    Ok(respond(Output::channel().upload(pump), move |out| {
        let (mut roots, mut blocks, mut bytes) = (Vec::new(), 0, 0);
        while let Some((_, reader)) = parts.next_file()? {
            let summary = ctx.node.dag_import(std::io::BufReader::with_capacity(1 << 20, reader), pin_roots)?;
            roots.extend(summary.roots);
            blocks += summary.blocks;
            bytes += summary.bytes;
        }
        if silent {
            return Ok(());
        }
        if pin_roots {
            for root in roots {
                out.json(&json!({ "Root": { "Cid": link(&root), "PinErrorMsg": "" } }))?;
            }
        }
        if stats {
            out.json(&json!({ "Stats": { "BlockCount": blocks, "BlockBytesCount": bytes } }))?;
        }
        Ok(())
    })
    .await)
}

async fn dag_export(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let path = q.required("root")?.to_string();
    let node = ctx.node.clone();
    let root = blocking(move || Ok(node.resolve(&path)?)).await?;
    Ok(respond(Output::stream("application/vnd.ipld.car"), move |out| {
        ctx.node.dag_export(&root, out)?;
        Ok(())
    })
    .await)
}

async fn repo_stat(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let size_only = q.bool(&["size-only", "s"], false)?;
    let s = blocking(move || Ok(ctx.node.repo_summary()?)).await?;
    if size_only {
        return Ok(single(&json!({ "RepoSize": s.repo_size, "StorageMax": s.storage_max })));
    }
    Ok(single(&json!({
        "RepoSize": s.repo_size,
        "StorageMax": s.storage_max,
        "NumObjects": s.num_objects,
        "RepoPath": s.repo_path,
        "Version": s.version,
    })))
}

async fn repo_verify(State(ctx): State<RpcContext>, _req: Request) -> Result<Response, ApiError> {
    let node = ctx.node.clone();
    let (checked, bad) = blocking(move || Ok(node.repo_verify()?)).await?;
    // kubo streams a progress line per block and a message per corrupt block; the check has run already
    // here, so the progress is one line with the total.
    Ok(respond(Output::channel(), move |out| {
        for mh in &bad {
            out.json(&json!({ "Msg": corrupt_message(mh), "Progress": 0 }))?;
        }
        out.json(&json!({ "Msg": "", "Progress": checked }))?;
        if !bad.is_empty() {
            return Err(ApiError::failed(format!("verify complete, {} blocks corrupt", bad.len())));
        }
        out.json(&json!({ "Msg": "verify complete, all blocks validated.", "Progress": 0 }))?;
        Ok(())
    })
    .await)
}

async fn repo_gc(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let silent = q.bool(&["silent"], false)?;
    let node = ctx.node.clone();
    let removed = blocking(move || Ok(node.repo_gc()?)).await?;
    Ok(respond(Output::channel(), move |out| {
        if !silent {
            for cid in removed {
                out.json(&json!({ "Key": link(&cid) }))?;
            }
        }
        Ok(())
    })
    .await)
}
