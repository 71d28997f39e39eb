//! HTTPS GET of public documents, the way a cloud provider fetches them:
//! the machine's trusted CAs (plus an optional extra CA), no client
//! credentials, no redirects followed, a short deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The server's clock: its `Date` header (None when absent or not an
    /// IMF-fixdate), for telling a skewed node clock.
    pub date: Option<SystemTime>,
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
        let date = res
            .headers()
            .get(hyper::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
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
            date,
        })
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| anyhow!("no answer within {}s", timeout.as_secs()))?
}

/// An HTTP `Date` in the IMF-fixdate form every HTTP/1.1 server sends
/// (RFC 9110 5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`); None for anything else.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let (_weekday, rest) = s.trim().split_once(", ")?;
    let f: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = f[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let num = |t: &str, len: usize| -> Option<i64> {
        (t.len() == len && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (day, year) = (num(day, 2)?, num(year, 4)?);
    let hms: Vec<&str> = time.split(':').collect();
    let [h, m, sec] = hms[..] else {
        return None;
    };
    let (h, m, sec) = (num(h, 2)?, num(m, 2)?, num(sec, 2)?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    // days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_to_the_second() {
        let at = |s| parse_http_date(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        // RFC 9110's example, and `date -u -d @1700000000`.
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(at("Tue, 14 Nov 2023 22:13:20 GMT"), Some(1_700_000_000));
        assert_eq!(at("Thu, 29 Feb 2024 00:00:00 GMT"), Some(1_709_164_800));
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        for bad in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }
}
