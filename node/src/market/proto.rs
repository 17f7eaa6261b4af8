//! The storage protocol on the wire: `/btfs/storage/1.0.0` over libp2p streams, one request and one
//! response per stream. Each message is CBOR (the types of `btfs_contracts_client::wire`) behind a 4-byte
//! big-endian length, capped at `wire::MAX_MESSAGE`; a longer length, a short read, bad CBOR or a peer that
//! takes longer than the deadline ends the exchange with an error and nothing else.
//!
//! Inbound streams are served by `serve`: at most `MAX_INBOUND` at once (more are dropped, so a flood of
//! streams costs a peer its requests, not our memory), each with a read deadline.

use std::sync::Arc;
use std::time::Duration;

use btfs_contracts_client::wire::{self, Request, Response};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Market;

pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new(wire::PROTOCOL);

/// Inbound requests served at once.
const MAX_INBOUND: usize = 64;
/// How long a peer has to send its request once it opened a stream.
const READ_DEADLINE: Duration = Duration::from_secs(30);

/// Errors of one exchange with a peer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtoError {
    #[error("cannot reach {peer}: {reason}")]
    Connect { peer: PeerId, reason: String },
    #[error("{peer} does not speak {}", wire::PROTOCOL)]
    Unsupported { peer: PeerId },
    #[error("{peer} did not answer within {secs} s")]
    Timeout { peer: PeerId, secs: u64 },
    #[error("exchange with {peer} failed: {reason}")]
    Io { peer: PeerId, reason: String },
    #[error("{peer} sent a malformed message: {reason}")]
    Malformed { peer: PeerId, reason: String },
}

/// Sends one request to `peer` and waits up to `timeout` for its response (dialing it first if needed).
pub(crate) async fn request(
    market: &Market,
    peer: PeerId,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ProtoError> {
    let exchange = async {
        market.network.swarm.connect_peer(peer).await.map_err(|reason| ProtoError::Connect { peer, reason })?;
        let mut control = market.network.control.clone();
        let mut stream = control.open_stream(peer, PROTOCOL).await.map_err(|e| match e {
            libp2p_stream::OpenStreamError::UnsupportedProtocol(_) => ProtoError::Unsupported { peer },
            other => ProtoError::Io { peer, reason: other.to_string() },
        })?;
        let bytes = wire::encode(req).map_err(|e| ProtoError::Io { peer, reason: e.to_string() })?;
        write_frame(&mut stream, &bytes).await.map_err(|e| ProtoError::Io { peer, reason: e.to_string() })?;
        let frame = read_frame(&mut stream).await.map_err(|e| ProtoError::Io { peer, reason: e.to_string() })?;
        let _ = stream.close().await;
        wire::decode::<Response>(&frame).map_err(|e| ProtoError::Malformed { peer, reason: e.to_string() })
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| ProtoError::Timeout { peer, secs: timeout.as_secs() })?
}

async fn write_frame(stream: &mut libp2p::Stream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("message too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn read_frame(stream: &mut libp2p::Stream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > wire::MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "message of {len} bytes is over the {} byte limit",
            wire::MAX_MESSAGE
        )));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Serves inbound storage requests until shutdown.
pub(crate) async fn serve(market: Arc<Market>, shutdown: CancellationToken) {
    let mut incoming = match market.network.acceptor.accept(&[PROTOCOL], MAX_INBOUND) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve {}", wire::PROTOCOL);
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_INBOUND));
    loop {
        let (peer, mut stream) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            next = incoming.recv() => match next {
                Some(s) => (s.peer, s.stream),
                None => break,
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "storage request dropped: too many in flight");
            continue;
        };
        let market = market.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let frame = match tokio::time::timeout(READ_DEADLINE, read_frame(&mut stream)).await {
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "storage request unreadable");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "storage request not sent in time");
                    return;
                }
            };
            let response = match wire::decode::<Request>(&frame) {
                Ok(req) => market.handle(peer, req).await,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "malformed storage request refused");
                    Response::Refused { code: wire::RefuseCode::Malformed, reason: format!("malformed request: {e}") }
                }
            };
            if let Ok(bytes) = wire::encode(&response) {
                let _ = write_frame(&mut stream, &bytes).await;
            }
            let _ = stream.close().await;
        });
    }
}
