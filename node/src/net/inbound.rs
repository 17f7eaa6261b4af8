//! Inbound protocol streams, handed over through a queue that holds a burst.
//!
//! libp2p-stream's `Control::accept` hands inbound streams over through a channel with room for one stream
//! across all peers: a second stream that arrives before the accepting task has taken the first is reset,
//! whoever sent it. Streams arrive in bursts in normal use (every provider in a Bitswap session opens its
//! block stream within the same millisecond, and the storage protocol opens a stream per request), so a
//! reset stream cost a lost message and a want timeout, or a failed storage request. This behaviour accepts
//! the protocols registered with it and queues each protocol's streams in a bounded channel; only a peer
//! that outpaces the queue (a flood) sees its streams reset. Outbound streams still go through libp2p-stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use libp2p::core::upgrade::{DeniedUpgrade, InboundUpgrade, UpgradeInfo};
use libp2p::core::{Endpoint, transport::PortUse};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour, Stream,
    SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::mpsc;

/// One inbound stream, negotiated to `protocol`.
#[derive(Debug)]
pub struct Incoming {
    pub peer: PeerId,
    pub protocol: StreamProtocol,
    pub stream: Stream,
}

/// Protocols registered for accepting, each with the queue its streams go to.
#[derive(Default)]
struct Registry {
    queues: HashMap<StreamProtocol, mpsc::Sender<Incoming>>,
    /// The registered protocols in registration order (what a handler offers in negotiation).
    protocols: Vec<StreamProtocol>,
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // The registry holds no invariant a panicking holder could break half-way.
    registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers protocols to accept; cheap to clone.
#[derive(Clone)]
pub struct Acceptor {
    registry: Arc<Mutex<Registry>>,
}

impl Acceptor {
    /// Accepts inbound streams of `protocols` from now on; up to `capacity` of them wait in the returned
    /// queue, and a stream that finds it full is reset. Fails if one of `protocols` is already registered.
    pub fn accept(&self, protocols: &[StreamProtocol], capacity: usize) -> Result<mpsc::Receiver<Incoming>, String> {
        let mut registry = lock(&self.registry);
        if let Some(p) = protocols.iter().find(|p| registry.queues.contains_key(*p)) {
            return Err(format!("{p} is already accepted"));
        }
        let (tx, rx) = mpsc::channel(capacity.max(1));
        for p in protocols {
            registry.queues.insert(p.clone(), tx.clone());
            registry.protocols.push(p.clone());
        }
        Ok(rx)
    }
}

/// The behaviour: one `Handler` per connection, all sharing the registry.
#[derive(Default)]
pub struct Behaviour {
    registry: Arc<Mutex<Registry>>,
}

impl Behaviour {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn acceptor(&self) -> Acceptor {
        Acceptor { registry: self.registry.clone() }
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler { peer, registry: self.registry.clone() }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _event: FromSwarm) {}

    fn on_connection_handler_event(&mut self, _peer: PeerId, _connection: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Offers the registered protocols on one connection and queues the streams negotiated to them.
pub struct Handler {
    peer: PeerId,
    registry: Arc<Mutex<Registry>>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = Offer;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Offer> {
        SubstreamProtocol::new(Offer { protocols: lock(&self.registry).protocols.clone() }, ())
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, Infallible, Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<Offer, DeniedUpgrade, (), Infallible>) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: (stream, protocol), ..
        }) = event
        {
            let Some(queue) = lock(&self.registry).queues.get(&protocol).cloned() else { return };
            match queue.try_send(Incoming { peer: self.peer, protocol, stream }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(dropped)) => {
                    tracing::debug!(peer = %self.peer, protocol = %dropped.protocol, "inbound stream queue full: stream reset");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

/// The inbound upgrade: multistream-select over the registered protocols, nothing more.
pub struct Offer {
    protocols: Vec<StreamProtocol>,
}

impl UpgradeInfo for Offer {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.protocols.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Offer {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}
