//! Node commands: `config`, `config show`, `id`, `version`, `shutdown`.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::{ApiError, Args, RpcContext, blocking, single};
use crate::api::{ConfigValueKind, config_value};

pub(super) fn routes() -> Router<RpcContext> {
    Router::new()
        .route("/config", post(config))
        .route("/config/show", post(config_show))
        .route("/id", post(id))
        .route("/version", post(version))
        .route("/shutdown", post(shutdown))
}

/// `config <key> [<value>]`: both answer kubo's `{"Key": .., "Value": ..}`.
async fn config(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let key = q.required("key")?.to_string();
    let value = q.args().get(1).cloned();
    let kind = match (q.bool(&["json"], false)?, q.bool(&["bool"], false)?) {
        (true, _) => ConfigValueKind::Json,
        (false, true) => ConfigValueKind::Bool,
        (false, false) => ConfigValueKind::String,
    };
    let value = blocking(move || match value {
        None => Ok(ctx.node.config_get(&key).map(|v| (key, v))?),
        Some(raw) => {
            let v = config_value(&key, &raw, kind)?;
            ctx.node.config_set(&key, v.clone())?;
            Ok((key, v))
        }
    })
    .await?;
    Ok(single(&json!({ "Key": value.0, "Value": value.1 })))
}

async fn config_show(State(ctx): State<RpcContext>) -> Response {
    single(&ctx.node.config_show())
}

async fn id(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let me = ctx.node.id();
    if let Some(peer) = q.args().first().filter(|p| **p != me.id) {
        return Err(ApiError::failed(format!("cannot look up peer {peer}: this node has no peer routing")));
    }
    Ok(single(&me))
}

async fn version(State(ctx): State<RpcContext>) -> Response {
    single(&ctx.node.version())
}

/// Asks the daemon to stop; the answer goes out before it does.
async fn shutdown(State(ctx): State<RpcContext>) -> Response {
    tracing::info!("shutdown requested over the API");
    ctx.shutdown.cancel();
    StatusCode::OK.into_response()
}
