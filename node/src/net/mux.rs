//! Yamux (`/yamux/1.0.0`) as the connection muxer, with data frames of up to 128 KiB.
//!
//! libp2p-yamux leaves yamux's default of 16 KiB per data frame in place and offers no way to change it.
//! Each frame costs the sender a flush (a system call and, under TLS, a record for its 12-byte header
//! besides the records of its body) and the receiver a frame to decode and a buffer to allocate, so a
//! Bitswap transfer paid that 65,536 times per GiB. A frame never exceeds the send window the peer granted,
//! so larger frames are within the yamux spec: Helia's yamux and go-yamux check frames against the window,
//! rust-yamux caps them at 1 MiB. 128 KiB rather than more: nim-libp2p starts a stream's window at 256,000
//! bytes, under a 256 KiB frame, and a frame holds up every other stream of the connection while it is
//! sent (10 ms at 100 Mbit/s). Everything else is yamux's defaults, as libp2p-yamux sets them.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::future::{self, Ready};
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// The largest data frame we send.
pub const MAX_DATA_FRAME: usize = 128 * 1024;

/// Inbound streams opened but not yet taken by the swarm; more are reset, as libp2p-yamux does.
const MAX_WAITING_INBOUND: usize = 256;

/// The muxer upgrade.
#[derive(Debug, Clone)]
pub struct Config(yamux::Config);

impl Default for Config {
    fn default() -> Self {
        let mut config = yamux::Config::default();
        config.set_split_send_size(MAX_DATA_FRAME);
        Self(config)
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(io, self.0, yamux::Mode::Server))))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(io, self.0, yamux::Mode::Client))))
    }
}

/// One yamux connection as libp2p sees it.
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    /// Streams the peer opened, read off the connection while the swarm was not asking for them.
    waiting: VecDeque<yamux::Stream>,
    /// The task that asked for an inbound stream when none was waiting.
    wants_inbound: Option<Waker>,
}

impl<C> Muxer<C> {
    fn new(connection: yamux::Connection<C>) -> Self {
        Self { connection, waiting: VecDeque::new(), wants_inbound: None }
    }
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// The next stream the peer opens; drives the connection (all its reads and writes) meanwhile.
    fn next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        match self.connection.poll_next_inbound(cx) {
            Poll::Ready(Some(stream)) => Poll::Ready(stream),
            Poll::Ready(None) => Poll::Ready(Err(yamux::ConnectionError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = yamux::Stream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(stream) = this.waiting.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(result) = this.next_inbound(cx) {
            return Poll::Ready(result);
        }
        this.wants_inbound = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Self::Substream, Self::Error>> {
        self.get_mut().connection.poll_new_outbound(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().connection.poll_close(cx)
    }

    /// Drives the connection. A stream the peer opens meanwhile waits for `poll_inbound`; after each one
    /// the task is woken again rather than looping, so that the swarm can take it before the next arrives.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = match this.next_inbound(cx) {
            Poll::Ready(Ok(stream)) => stream,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        if this.waiting.len() >= MAX_WAITING_INBOUND {
            tracing::debug!(%stream, "resetting an inbound stream: {MAX_WAITING_INBOUND} wait already");
            drop(stream);
        } else {
            this.waiting.push_back(stream);
            if let Some(waker) = this.wants_inbound.take() {
                waker.wake();
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::poll_fn;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::core::muxing::StreamMuxerExt;
    use tokio::sync::oneshot;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    use super::*;

    type Pipe = Compat<tokio::io::DuplexStream>;

    /// A connection that remembers the largest single write made to it.
    struct Recorder {
        inner: Pipe,
        largest: Arc<AtomicUsize>,
    }

    impl AsyncRead for Recorder {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.largest.fetch_max(buf.len(), Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_close(cx)
        }
    }

    /// Drives a muxer on its own task; hands over the first stream the peer opens, if asked to.
    fn drive<C>(mut muxer: Muxer<C>, mut inbound: Option<oneshot::Sender<yamux::Stream>>)
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        tokio::spawn(poll_fn(move |cx| {
            // `poll` first, as the swarm does: a stream it reads off the connection waits in the queue.
            if let Poll::Ready(Err(_)) = muxer.poll_unpin(cx) {
                return Poll::Ready(());
            }
            if let Some(tx) = inbound.take() {
                match muxer.poll_inbound_unpin(cx) {
                    Poll::Ready(Ok(stream)) => drop(tx.send(stream)),
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => inbound = Some(tx),
                }
            }
            Poll::Pending
        }));
    }

    #[tokio::test]
    async fn a_mebibyte_crosses_intact_in_frames_larger_than_16_kib() {
        let (a, b) = tokio::io::duplex(4 << 20);
        let largest = Arc::new(AtomicUsize::new(0));
        let dialer = Recorder { inner: a.compat(), largest: largest.clone() };
        let mut client = Config::default().upgrade_outbound(dialer, "/yamux/1.0.0").await.expect("client");
        let server = Config::default().upgrade_inbound(b.compat(), "/yamux/1.0.0").await.expect("server");
        let mut out = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.expect("open a stream");
        let (tx, rx) = oneshot::channel();
        drive(client, None);
        drive(server, Some(tx));

        let sent: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let write = async {
            out.write_all(&sent).await.expect("write");
            out.close().await.expect("close");
        };
        let read = async {
            let mut stream = rx.await.expect("the peer's stream");
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.expect("read");
            got
        };
        let ((), got) = tokio::time::timeout(std::time::Duration::from_secs(10), async { tokio::join!(write, read) })
            .await
            .expect("the transfer stalled");
        assert!(got == sent, "{} bytes arrived of {}, or they changed", got.len(), sent.len());
        let largest = largest.load(Ordering::Relaxed);
        assert!(largest > 64 * 1024, "the largest write was {largest} bytes: frames are still small");
        assert!(largest <= MAX_DATA_FRAME, "a write of {largest} bytes is over the frame limit");
    }
}
