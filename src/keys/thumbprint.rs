//! The IAM OIDC provider thumbprint: lowercase hex SHA-1 of the DER of the
//! top CA certificate of the issuer host's TLS chain, from a CA file or read
//! from the server itself over TLS (rustls, ring provider). A chain read from
//! the server must verify against this machine's trusted CAs, unless
//! `--insecure-skip-tls-verify` says to take it anyway.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha1::{Digest, Sha1};

use super::pem::scan;
use crate::issuer::Issuer;

/// Lowercase hex SHA-1 of a DER certificate (40 characters).
pub fn sha1_hex(der: &[u8]) -> String {
    Sha1::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A thumbprint and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbprint {
    pub value: String,
    /// Human description of the source.
    pub source: String,
    pub warnings: Vec<String>,
}

/// From `--ca-file`: the last certificate in the file (the top of a chain
/// bundle ordered leaf first, or the only certificate).
pub fn from_ca_file(pem: &[u8], path: &Path) -> anyhow::Result<Thumbprint> {
    let scan = scan(pem);
    let certs: Vec<_> = scan
        .blocks
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .collect();
    let Some(last) = certs.last() else {
        anyhow::bail!(
            "--ca-file {}: no CERTIFICATE PEM block found",
            path.display()
        );
    };
    <x509_cert::Certificate as der::Decode>::from_der(&last.der).map_err(|e| {
        anyhow::anyhow!(
            "--ca-file {}: {} is not a valid certificate: {e}",
            path.display(),
            last.describe()
        )
    })?;
    let mut warnings = Vec::new();
    if certs.len() > 1 {
        warnings.push(format!(
            "--ca-file {} holds {} certificates: the thumbprint is of the last one ({}), taken as the top CA",
            path.display(),
            certs.len(),
            last.describe()
        ));
    }
    Ok(Thumbprint {
        value: sha1_hex(&last.der),
        source: format!("--ca-file {}", path.display()),
        warnings,
    })
}

/// The DER chain as sent (leaf first) and whether it verified.
type Seen = (Vec<Vec<u8>>, Result<(), String>);

/// Records the chain the server sends and whether it verifies against this
/// machine's trust store (system CAs, `SSL_CERT_FILE`/`SSL_CERT_DIR`); the
/// caller refuses an untrusted chain unless told to skip the check (the
/// handshake completes either way, so the message can say why). Handshake
/// signatures are always checked.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    seen: Mutex<Option<Seen>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.webpki {
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Err("no trusted CA certificates found on this machine".into()),
        };
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.as_ref().to_vec())
            .collect();
        *self.seen.lock().expect("not poisoned") = Some((chain, verdict));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Connect to the issuer's host (its port, or 443) and take the thumbprint of
/// the last certificate the server sends (the top of the chain it serves).
/// The chain must be trusted by this machine; `skip_verify`
/// (`--insecure-skip-tls-verify`) takes it anyway, with a warning saying
/// what was skipped.
pub fn fetch(issuer: &Issuer, skip_verify: bool) -> anyhow::Result<Thumbprint> {
    let url = url::Url::parse(issuer.as_str()).context("--issuer: not a URL")?;
    let port = url.port().unwrap_or(443);
    let (server_name, host) = match url.host() {
        Some(url::Host::Domain(d)) => (
            ServerName::try_from(d.to_string())
                .map_err(|e| anyhow::anyhow!("--issuer host {d}: {e}"))?,
            d.to_string(),
        ),
        Some(url::Host::Ipv4(ip)) => (
            ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
            ip.to_string(),
        ),
        Some(url::Host::Ipv6(ip)) => (
            ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
            format!("[{ip}]"),
        ),
        None => anyhow::bail!("--issuer {issuer}: no host"),
    };
    let target = format!("{host}:{port}");
    let fail = |what: &str| format!("--fetch-thumbprint: {what} {target}");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = crate::system::https::system_roots();
    let webpki = if roots.is_empty() {
        None
    } else {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .ok()
    };
    let recorder = Arc::new(Recorder {
        provider: provider.clone(),
        webpki,
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS configuration")?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();

    let addrs: Vec<_> = target
        .to_socket_addrs()
        .with_context(|| fail("cannot resolve"))?
        .collect();
    let mut last_err = None;
    let mut sock = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let mut sock = match (sock, last_err) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(e).with_context(|| fail("cannot connect to")),
        (None, None) => anyhow::bail!("{}", fail("no address for")),
    };
    sock.set_read_timeout(Some(TIMEOUT))?;
    sock.set_write_timeout(Some(TIMEOUT))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), server_name).context("TLS client")?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .with_context(|| fail("TLS handshake failed with"))?;
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    let _ = sock.flush();

    let (chain, verdict) = recorder
        .seen
        .lock()
        .expect("not poisoned")
        .take()
        .ok_or_else(|| anyhow::anyhow!("{}", fail("no certificate received from")))?;
    let top = chain
        .last()
        .expect("the end-entity certificate is always there");
    let mut warnings = Vec::new();
    if chain.len() == 1 {
        warnings.push(format!(
            "{target} sent only its own certificate: the thumbprint is of that leaf certificate, which changes at every renewal"
        ));
    }
    match &verdict {
        Err(why) if !skip_verify => anyhow::bail!(
            "--fetch-thumbprint: the TLS chain of {target} is not trusted by this machine ({why}): no thumbprint \
             taken from it. Pass --ca-file with the issuer host's CA certificate, or add \
             --insecure-skip-tls-verify to take it anyway and check it out of band"
        ),
        Err(why) => warnings.push(format!(
            "--insecure-skip-tls-verify: the TLS chain of {target} was NOT verified ({why}): the thumbprint is of \
             whatever certificate answered; check it out of band"
        )),
        Ok(()) if skip_verify => warnings.push(format!(
            "--insecure-skip-tls-verify was not needed: the TLS chain of {target} is trusted by this machine"
        )),
        Ok(()) => {}
    }
    Ok(Thumbprint {
        value: sha1_hex(top),
        source: format!(
            "the last of the {} certificate(s) sent by {target}{}",
            chain.len(),
            if verdict.is_ok() {
                " (chain verified)"
            } else {
                ""
            }
        ),
        warnings,
    })
}
