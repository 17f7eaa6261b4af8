//! libp2p's TLS 1.3 handshake (`/tls/1.0.0`, the libp2p TLS specification) with AES-GCM preferred.
//!
//! libp2p-tls lists ChaCha20-Poly1305 first, and a TLS 1.3 server takes the client's order, so two
//! libp2p-tls peers always settle on ChaCha20-Poly1305. On x86-64 with AES-NI and VAES that costs four
//! times as much CPU per byte as AES-GCM (2.7 against 10–12 GB/s here, one core), and encryption is a
//! fifth of what both ends of a Bitswap transfer spend. On a CPU with AES instructions this upgrade offers
//! AES-128-GCM first and, as a server, picks by its own order, so a connection with any libp2p TLS peer
//! uses AES-GCM. Without them it keeps libp2p-tls's order and the client's choice.
//!
//! Session resumption is off: every peer has the same server name (none), so a ticket from one peer would
//! be offered, in the clear, to the next, linking our connections, and could never be used anyway.
//!
//! The certificate (self-signed, carrying the libp2p public-key extension) and its parsing come from
//! libp2p-tls; this module only builds the rustls configurations and the certificate checks the spec
//! asks for: exactly one certificate, its self-signature and extension valid, TLS 1.3 only. The peer id
//! is compared with the dialled one by the swarm, as for Noise.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use futures_rustls::TlsStream;
use libp2p::PeerId;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::Keypair;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, CommonState, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};

/// The protocol id of libp2p's TLS handshake.
pub const PROTOCOL: &str = "/tls/1.0.0";

/// The ALPN token the spec requires of both ends.
const ALPN: &[u8] = b"libp2p";

/// Why a TLS upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not make this node's TLS certificate: {0}")]
    Certificate(#[from] libp2p_tls::certificate::GenError),
    #[error("could not set up TLS: {0}")]
    Setup(#[from] rustls::Error),
    #[error("TLS handshake as the listener failed: {0}")]
    Inbound(std::io::Error),
    #[error("TLS handshake as the dialer failed: {0}")]
    Outbound(std::io::Error),
    #[error("the peer's TLS certificate is not a libp2p certificate: {0}")]
    PeerCertificate(String),
}

/// The security upgrade: clone it freely, the configurations are shared.
#[derive(Clone)]
pub struct Config {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl Config {
    /// Makes this node's certificate from its identity key and the client and server configurations.
    pub fn new(keypair: &Keypair) -> Result<Self, TlsError> {
        // libp2p-tls makes the certificate; its configurations are only a source of the resolvers that
        // present it.
        let client_cert = libp2p_tls::make_client_config(keypair, None)?.client_auth_cert_resolver;
        let server_cert = libp2p_tls::make_server_config(keypair)?.cert_resolver;
        let aes = has_aes_instructions();
        let provider = Arc::new(provider(aes));

        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Libp2pCertificates))
            .with_client_cert_resolver(client_cert);
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();

        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(Libp2pCertificates))
            .with_cert_resolver(server_cert);
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        // A stock libp2p-tls client lists ChaCha20-Poly1305 first; choose by our order instead.
        server.ignore_client_order = aes;

        Ok(Self { client: Arc::new(client), server: Arc::new(server) })
    }
}

/// aws-lc-rs (as libp2p-tls uses), TLS 1.3 suites only: AES-GCM first when `aes`, else ChaCha20 first.
fn provider(aes: bool) -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = if aes {
        vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256]
    } else {
        vec![TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256]
    };
    provider
}

/// Whether this CPU runs AES-GCM in hardware (AES and carry-less multiplication instructions).
fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            let stream =
                futures_rustls::TlsAcceptor::from(self.server).accept(socket).await.map_err(TlsError::Inbound)?;
            let peer = peer_id(stream.get_ref().1)?;
            Ok((peer, stream.into()))
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            // The spec forbids Server Name Indication; an IP address as the name turns it off.
            let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
            let stream = futures_rustls::TlsConnector::from(self.client)
                .connect(name, socket)
                .await
                .map_err(TlsError::Outbound)?;
            let peer = peer_id(stream.get_ref().1)?;
            Ok((peer, stream.into()))
        }
        .boxed()
    }
}

/// The peer id in the one certificate the handshake accepted.
fn peer_id(state: &CommonState) -> Result<PeerId, TlsError> {
    match state.peer_certificates() {
        Some([cert]) => libp2p_tls::certificate::parse(cert)
            .map(|cert| cert.peer_id())
            .map_err(|e| TlsError::PeerCertificate(e.to_string())),
        Some(certs) => Err(TlsError::PeerCertificate(format!("{} certificates, not one", certs.len()))),
        None => Err(TlsError::PeerCertificate("none was presented".into())),
    }
}

/// The spec's checks of the certificate either end presents. Client authentication is mandatory.
#[derive(Debug)]
struct Libp2pCertificates;

impl Libp2pCertificates {
    /// One self-signed certificate with a valid libp2p extension.
    fn check(end_entity: &CertificateDer, intermediates: &[CertificateDer]) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General("a libp2p peer presents exactly one certificate".into()));
        }
        libp2p_tls::certificate::parse(end_entity)
            .map(|_| ())
            .map_err(|e| rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e)))))
    }

    /// The handshake signature, made with the key the certificate carries.
    fn signature(
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let cert = libp2p_tls::certificate::parse(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        cert.verify_signature(dss.scheme, message, dss.signature())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn tls12() -> rustls::Error {
        rustls::Error::General("TLS 1.2 is not offered to libp2p peers".into())
    }

    /// The schemes a libp2p certificate's key may sign with (libp2p-tls makes ECDSA P-256 keys), best first.
    fn schemes() -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }
}

impl ServerCertVerifier for Libp2pCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: &ServerName,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Self::tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for Libp2pCertificates {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Self::tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use rustls::CipherSuite;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    use super::*;

    type Pipe = Compat<tokio::io::DuplexStream>;

    /// Runs a dialer and a listener upgrade against each other; returns what each learnt and the
    /// cipher suite, after a message each way.
    async fn handshake<D, L>(dialer: D, listener: L) -> (PeerId, PeerId, CipherSuite)
    where
        D: OutboundConnectionUpgrade<Pipe, Info = &'static str, Output = (PeerId, TlsStream<Pipe>)>,
        L: InboundConnectionUpgrade<Pipe, Info = &'static str, Output = (PeerId, TlsStream<Pipe>)>,
        D::Error: std::fmt::Debug,
        L::Error: std::fmt::Debug,
    {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (out, inb) =
            tokio::join!(dialer.upgrade_outbound(a.compat(), PROTOCOL), listener.upgrade_inbound(b.compat(), PROTOCOL));
        let ((listener_id, mut a), (dialer_id, mut b)) = (out.expect("dialer"), inb.expect("listener"));
        let suite = a.get_ref().1.negotiated_cipher_suite().expect("a suite after the handshake").suite();
        let (sent, mut got) = (vec![7u8; 100_000], vec![0u8; 100_000]);
        let (w, r) = tokio::join!(async { a.write_all(&sent).await.and(a.flush().await) }, b.read_exact(&mut got));
        w.expect("write");
        r.expect("read");
        assert!(got == sent, "bytes changed in transit");
        (listener_id, dialer_id, suite)
    }

    #[test]
    fn this_machine_has_aes_instructions() {
        // The tests below expect AES-GCM; on a CPU without AES instructions ChaCha20 is the right choice.
        assert!(has_aes_instructions(), "the AES-GCM tests need a CPU with AES instructions");
    }

    #[tokio::test]
    async fn two_btfs_nodes_use_aes_gcm_and_learn_each_others_id() {
        let (k1, k2) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (listener, dialer, suite) =
            handshake(Config::new(&k1).expect("config"), Config::new(&k2).expect("config")).await;
        assert_eq!(listener, k2.public().to_peer_id());
        assert_eq!(dialer, k1.public().to_peer_id());
        assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);
    }

    #[tokio::test]
    async fn a_stock_libp2p_tls_peer_gets_aes_gcm_either_way() {
        let (ours, theirs) = (Keypair::generate_secp256k1(), Keypair::generate_ecdsa());
        // They dial and list ChaCha20-Poly1305 first; as the listener we choose.
        let (_, dialer, suite) =
            handshake(libp2p_tls::Config::new(&theirs).expect("stock config"), Config::new(&ours).expect("config"))
                .await;
        assert_eq!(dialer, theirs.public().to_peer_id());
        assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);
        // We dial; they take our order.
        let (listener, _, suite) =
            handshake(Config::new(&ours).expect("config"), libp2p_tls::Config::new(&theirs).expect("stock config"))
                .await;
        assert_eq!(listener, theirs.public().to_peer_id());
        assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);
    }

    #[tokio::test]
    async fn a_dialer_without_a_certificate_is_refused() {
        let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(provider(true)))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Libp2pCertificates))
            .with_no_client_auth();
        let listener = Config::new(&Keypair::generate_ed25519()).expect("config");
        let (a, b) = tokio::io::duplex(1 << 16);
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
        let (out, inb) = tokio::join!(
            async {
                // The client's handshake completes before the server has read its last flight; the
                // refusal shows on its first read.
                let mut stream =
                    futures_rustls::TlsConnector::from(Arc::new(anonymous)).connect(name, a.compat()).await?;
                stream.read(&mut [0u8; 1]).await
            },
            listener.upgrade_inbound(b.compat(), PROTOCOL)
        );
        let Err(err) = inb.map(|(peer, _)| peer) else { panic!("a peer without a certificate was accepted") };
        let TlsError::Inbound(err) = err else { panic!("refused for another reason: {err}") };
        let cause = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(matches!(cause, Some(rustls::Error::NoCertificatesPresented)), "refused for another reason: {err}");
        assert!(out.is_err(), "the dialer was not told: {out:?}");
    }
}
