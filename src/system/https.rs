//! HTTPS GET of public documents, the way a cloud provider fetches them:
//! the machine's trusted CAs (plus an optional extra CA), no client
//! credentials, no redirects followed, a short deadline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;

/// The largest document read (discovery documents are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `Location` header of a redirect.
    pub location: Option<String>,
}

/// GET `url` over HTTPS. `extra_ca`: PEM certificates to trust besides the
/// system's (a private CA). Errors mean "not reachable": DNS, TCP, TLS, timeout.
pub async fn get(url: &str, extra_ca: Option<&[u8]>, timeout: Duration) -> Result<Response> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("{url} is not a valid URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(anyhow!("{url} is not an https URL"));
    }
    let tls = client_config(extra_ca)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = hyper::Request::get(uri)
        .header(
            hyper::header::USER_AGENT,
            concat!("irsa-agent/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())?;
    let fetch = async {
        let res = client
            .request(request)
            .await
            .map_err(|e| anyhow!(super::error_line(&e)))?;
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(res.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok::<_, anyhow::Error>(Response {
            status,
            body,
            location,
        })
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| anyhow!("no answer within {}s", timeout.as_secs()))?
}

/// The machine's trusted CAs (a broken certificate in the system store is
/// skipped: not ours to fail on).
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

fn client_config(extra_ca: Option<&[u8]>) -> Result<rustls::ClientConfig> {
    let mut roots = system_roots();
    if let Some(pem) = extra_ca {
        let scan = crate::keys::pem_certificates(pem);
        if scan.is_empty() {
            return Err(anyhow!("the CA file holds no CERTIFICATE block"));
        }
        for der in scan {
            roots
                .add(CertificateDer::from(der))
                .context("adding the CA file's certificate")?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
