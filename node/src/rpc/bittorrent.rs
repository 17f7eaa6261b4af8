//! `bittorrent/*`: import (progress as JSON lines, then the record), seed, unseed, ls, metainfo.
//!
//! An import's source is `arg` (a magnet link or infohash) or an uploaded .torrent file (multipart, as `dag
//! import` takes a CAR). Imports run in the daemon whether or not its network is up; seeding needs it.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use serde_json::json;

use super::{ApiError, Args, Output, RpcContext, blocking, respond, single, upload};
use crate::bittorrent::{self, ImportEvent, ImportRequest, TorrentError, Torrents};

pub(super) fn routes() -> Router<RpcContext> {
    Router::new()
        .route("/bittorrent/import", post(import))
        .route("/bittorrent/seed", post(seed))
        .route("/bittorrent/unseed", post(unseed))
        .route("/bittorrent/ls", post(ls))
        .route("/bittorrent/metainfo", post(metainfo))
}

fn api(e: TorrentError) -> ApiError {
    match e {
        TorrentError::Invalid(_) | TorrentError::V2Only(_) | TorrentError::Unknown(_) => {
            ApiError::bad_request(e.to_string())
        }
        TorrentError::Store(s) => ApiError::from(s),
        other => ApiError::failed(other.to_string()),
    }
}

/// The daemon's torrents, or (in `--offline` mode) a set for this request only.
fn torrents(ctx: &RpcContext) -> Arc<Torrents> {
    ctx.node.torrents.get().cloned().unwrap_or_else(|| Arc::new(Torrents::offline(ctx.node.clone())))
}

/// Reads the first uploaded file, up to the .torrent size limit.
fn uploaded_torrent(parts: &mut upload::Upload) -> Result<Option<(String, Vec<u8>)>, ApiError> {
    let Some((name, reader)) = parts.next_file()? else { return Ok(None) };
    let mut bytes = Vec::new();
    reader.take(bittorrent::MAX_TORRENT_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > bittorrent::MAX_TORRENT_FILE {
        return Err(ApiError::bad_request(format!(
            "the .torrent file is larger than {} bytes",
            bittorrent::MAX_TORRENT_FILE
        )));
    }
    Ok(Some((name, bytes)))
}

async fn import(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let arg = q.args().first().cloned();
    let only = match q.string(&["only"])? {
        Some(text) => Some(parse_only(text)?),
        None => None,
    };
    let stall = q.u64(&["timeout"])?.map_or(bittorrent::DEFAULT_STALL, Duration::from_secs);
    let dht_bootstrap = q.string(&["dht-bootstrap"])?.map(|s| s.split(',').map(str::to_string).collect());
    let quiet = q.bool(&["quiet", "q"], false)?;
    let seed = q.bool(&["seed"], false)?;
    let torrents = torrents(&ctx);
    // Refused before anything is downloaded: seeding needs the daemon's swarm (not up with `--offline`).
    if seed && torrents.listen_addr().is_none() {
        return Err(ApiError::bad_request("--seed: this daemon runs no BitTorrent session (is it --offline?)"));
    }
    let (mut parts, pump) = if arg.is_none() { Some(upload::start(req, "file").await?) } else { None }.unzip();
    let runtime = tokio::runtime::Handle::current();
    let mut output = Output::channel();
    if let Some(pump) = pump {
        output = output.upload(pump);
    }
    Ok(respond(output, move |out| {
        let (source, torrent) = match (arg, parts.as_mut()) {
            (Some(a), _) => (a, None),
            (None, Some(p)) => match uploaded_torrent(p)? {
                Some((name, bytes)) => {
                    (if name.is_empty() { "the uploaded .torrent".into() } else { name }, Some(bytes))
                }
                None => return Err(ApiError::bad_request("argument \"source\" is required")),
            },
            (None, None) => return Err(ApiError::bad_request("argument \"source\" is required")),
        };
        let request = ImportRequest { source, torrent, only, stall_timeout: stall, dht_bootstrap };
        let (tx, rx) = std::sync::mpsc::channel::<ImportEvent>();
        let importer = torrents.clone();
        let job = runtime.spawn(async move {
            let send = move |e: ImportEvent| {
                let _ = tx.send(e);
            };
            importer.import(request, &send).await
        });
        // Progress lines until the import ends (the sender is dropped with the job's future).
        for event in rx {
            if !quiet {
                out.json(&event)?;
            }
        }
        let imported = runtime.block_on(job).map_err(|_| ApiError::Internal)?.map_err(api)?;
        let mut answer = json!({ "Event": "Imported", "Already": imported.already, "Record": imported.record });
        if seed {
            let root = &imported.record.root;
            let seeding = runtime.block_on(torrents.seed(root, None, Vec::new())).map_err(|e| {
                ApiError::failed(format!("the torrent was imported as {root}, but seeding it failed: {e}"))
            })?;
            answer["Magnet"] = json!(seeding.magnet);
        }
        out.json(&answer)?;
        Ok(())
    })
    .await)
}

/// `--only 0,2,5`.
pub(crate) fn parse_only(text: &str) -> Result<Vec<usize>, ApiError> {
    text.split(',')
        .map(|s| {
            s.trim().parse::<usize>().map_err(|_| ApiError::bad_request(format!("--only: {s:?} is not a file index")))
        })
        .collect()
}

async fn seed(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let cid = q.required("cid")?.to_string();
    let name = q.string(&["name"])?.map(str::to_string);
    let trackers: Vec<String> =
        q.string(&["tracker"])?.map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default();
    let torrents = ctx.node.torrents.get().cloned().ok_or_else(|| api(TorrentError::NotRunning))?;
    let seeding = torrents.seed(&cid, name, trackers).await.map_err(api)?;
    Ok(single(&json!({
        "InfoHash": seeding.info_hash, "Name": seeding.name, "Magnet": seeding.magnet, "Root": seeding.root
    })))
}

async fn unseed(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let key = q.required("infohash or cid")?.to_string();
    let torrents = ctx.node.torrents.get().cloned().ok_or_else(|| api(TorrentError::NotRunning))?;
    let record = torrents.unseed(&key).await.map_err(api)?;
    Ok(single(&json!({ "InfoHash": record.info_hash, "Seeding": false })))
}

async fn ls(State(ctx): State<RpcContext>) -> Result<Response, ApiError> {
    let torrents = torrents(&ctx);
    let records = blocking(move || torrents.list().map_err(api)).await?;
    Ok(single(&json!({ "Torrents": records })))
}

async fn metainfo(req: Request) -> Result<Response, ApiError> {
    let (mut parts, _pump) = upload::start(req, "file").await?;
    let value = blocking(move || {
        let (name, bytes) =
            uploaded_torrent(&mut parts)?.ok_or_else(|| ApiError::bad_request("argument \"file\" is required"))?;
        bittorrent::metainfo_json(&bytes, &name).map_err(api)
    })
    .await?;
    Ok(single(&value))
}
