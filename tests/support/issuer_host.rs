//! A local HTTPS server standing in for wherever an issuer's discovery
//! documents are published (S3, a web server): it serves whatever each test
//! puts at a path, with any status, over TLS with a test CA. Its `Date`
//! header can be set off from the real time, to stand for a skewed node clock.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio_rustls::rustls;

type Routes = Arc<Mutex<BTreeMap<String, (u16, Vec<u8>)>>>;
/// Seconds added to the real time in the `Date` header (None: hyper's own).
type DateOffset = Arc<Mutex<Option<i64>>>;

/// The server; it stops when dropped.
pub struct IssuerHost {
    port: u16,
    ca_pem: String,
    leaf_der: Vec<u8>,
    routes: Routes,
    date_offset: DateOffset,
    _rt: tokio::runtime::Runtime,
}

impl IssuerHost {
    pub fn start() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "issuer-host test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Routes = Arc::default();
        let served = routes.clone();
        let date_offset: DateOffset = Arc::default();
        let offset = date_offset.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let routes = served.clone();
                let offset = offset.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let routes = routes.clone();
                        let offset = *offset.lock().unwrap();
                        async move {
                            let (status, body) = routes
                                .lock()
                                .unwrap()
                                .get(req.uri().path())
                                .cloned()
                                .unwrap_or((404, b"not found".to_vec()));
                            let mut res = Response::builder()
                                .status(status)
                                .header("content-type", "application/json");
                            if let Some(off) = offset {
                                // hyper keeps a Date the service sets.
                                res = res.header("date", http_date(now_unix() + off));
                            }
                            Ok::<_, Infallible>(res.body(Full::new(Bytes::from(body))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            port,
            ca_pem: ca_cert.pem(),
            leaf_der: leaf.der().to_vec(),
            routes,
            date_offset,
            _rt: rt,
        }
    }

    /// `https://localhost:<port>`.
    pub fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The CA that signed the server's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server's own certificate (DER): the whole chain it sends.
    pub fn leaf_der(&self) -> &[u8] {
        &self.leaf_der
    }

    /// Serve `body` with `status` at `path`.
    pub fn put(&self, path: &str, status: u16, body: impl Into<Vec<u8>>) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_string(), (status, body.into()));
    }

    pub fn remove(&self, path: &str) {
        self.routes.lock().unwrap().remove(path);
    }

    /// Send a `Date` header `secs` off the real time (negative: in the past);
    /// None: the server's real time again.
    pub fn set_date_offset(&self, secs: Option<i64>) {
        *self.date_offset.lock().unwrap() = secs;
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) of a time after 1970
/// (H. Hinnant's civil_from_days).
pub fn http_date(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
