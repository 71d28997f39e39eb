//! Tests of the **simulated control plane** in `tests/support/sim` (the
//! stand-in for a real kube-apiserver, systemd and kubelet in end-to-end
//! tests): it must follow `reference/apiserver-semantics.md` and upstream
//! behaviour, or end-to-end tests prove nothing.
//!
//! The token checks here are independent of the simulator's own code: kids
//! are compared with values computed by OpenSSL (tests/fixtures/keys/README.md)
//! or recomputed here, signatures are verified with the RustCrypto crates
//! directly and, when `.venv/bin/python` has PyJWT (`tests/run` creates it;
//! `IRSA_AGENT_VENV` overrides the path), with PyJWT + cryptography too.

mod support;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use support::sim::keys::{self, PublicKey, SigningKeyError};
use support::sim::startup::{go_url_parse, FileView};
use support::sim::{Auth, Cluster, Fault, Options};
use support::{apiserver_args, copy_fixture, fixture_path, sa_settings, snapshot, SaSettings};

const DISTROS: &[(&str, &str)] = &[
    ("microk8s-default", "microk8s"),
    ("kubeadm-default", "kubeadm"),
    ("minikube-default", "minikube"),
    ("k3s-default", "k3s"),
    ("rke2-default", "rke2"),
    ("k0s-default", "k0s"),
];

const KUBEADM_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const MANIFEST: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";

fn fast() -> Options {
    Options {
        startup_delay: Duration::from_millis(50),
    }
}

fn start(case: &str, distro: &str) -> (tempfile::TempDir, Cluster) {
    let root = copy_fixture(case);
    let c = Cluster::start_with(distro, root.path(), fast())
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
    (root, c)
}

/// Edit a sysroot file atomically (temp file + rename, as the tool does).
fn edit(root: &Path, rel: &str, f: impl FnOnce(&str) -> String) {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    let new = f(&text);
    assert_ne!(text, new, "the edit of {rel} changed nothing");
    let tmp = root.join(".edit.tmp");
    std::fs::write(&tmp, new).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not found");
    text.replacen(from, to, 1)
}

fn claims(token: &str) -> (Value, Value) {
    support::sim::jwt::decode_unverified(token).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn refused(port: u16) -> bool {
    matches!(
        std::net::TcpStream::connect(("127.0.0.1", port)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

/// DER inside a one-block PEM file, decoded here (not by the simulator).
fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).unwrap()
}

fn kid_of_pem(path: &Path) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(pem_der(path)))
}

// ---------------------------------------------------------------------------
// An HTTPS client of the test's own (rustls + hyper), for independent checks
// ---------------------------------------------------------------------------

struct Client {
    port: u16,
    config: Arc<rustls::ClientConfig>,
    bearer: Option<String>,
}

impl Client {
    /// A client built from an admin kubeconfig file, as any kubeconfig user would.
    fn from_kubeconfig(path: &Path) -> Client {
        let kc: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cluster = &kc["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().unwrap();
        let port: u16 = server
            .strip_prefix("https://127.0.0.1:")
            .expect("server is https://127.0.0.1:<port>")
            .parse()
            .unwrap();
        let ca = STANDARD
            .decode(cluster["certificate-authority-data"].as_str().unwrap())
            .unwrap();
        let user = &kc["users"][0]["user"];
        let cert = user["client-certificate-data"]
            .as_str()
            .map(|s| STANDARD.decode(s).unwrap());
        let key = user["client-key-data"]
            .as_str()
            .map(|s| STANDARD.decode(s).unwrap());
        let bearer = user["token"].as_str().map(str::to_string);
        Client::new(port, &ca, cert.zip(key), bearer)
    }

    fn new(
        port: u16,
        ca_pem: &[u8],
        cert_key: Option<(Vec<u8>, Vec<u8>)>,
        bearer: Option<String>,
    ) -> Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match cert_key {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(&cert).unwrap()],
                    PrivateKeyDer::from_pem_slice(&key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Client {
            port,
            config: Arc::new(config),
            bearer,
        }
    }

    fn anonymous(c: &Cluster) -> Client {
        Client::new(c.port(), c.ca_pem().as_bytes(), None, None)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, String)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            let tls = tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp)
                .await?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("Host", "127.0.0.1");
            if let Some(t) = &self.bearer {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            let payload = body.map(|b| b.to_string()).unwrap_or_default();
            let resp = send
                .send_request(req.body(Full::new(Bytes::from(payload))).unwrap())
                .await
                .map_err(std::io::Error::other)?;
            let code = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            Ok((code, String::from_utf8_lossy(&bytes).into_owned()))
        })
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, None).unwrap()
    }
}

// ---------------------------------------------------------------------------
// Every distribution comes up from its fixture
// ---------------------------------------------------------------------------

#[test]
fn every_distro_comes_up_from_its_fixture_with_a_working_kubeconfig() {
    let handles: Vec<_> = DISTROS
        .iter()
        .map(|&(case, distro)| {
            std::thread::spawn(move || {
                let (root, c) = start(case, distro);
                let st = c.status();
                assert!(st.running, "{distro}");
                assert_eq!(st.generation, 1, "{distro}");
                assert_eq!(st.last_start_error, None, "{distro}");
                assert!(st.ready_at.is_some(), "{distro}");
                let expected: SaSettings =
                    sa_settings(&apiserver_args(root.path(), distro).unwrap()).unwrap();
                assert_eq!(st.settings.as_ref(), Some(&expected), "{distro}");
                assert_eq!(st.args, apiserver_args(root.path(), distro).unwrap());

                // The admin kubeconfig was overwritten with a real one for the simulator.
                let kc: Value =
                    serde_norway::from_str(&std::fs::read_to_string(c.kubeconfig_path()).unwrap())
                        .unwrap();
                assert_eq!(kc["apiVersion"], "v1");
                assert_eq!(kc["kind"], "Config");
                assert_eq!(kc["clusters"][0]["cluster"]["server"], c.url().as_str());
                let ctx = kc["current-context"].as_str().unwrap();
                assert_eq!(kc["contexts"][0]["name"], ctx);
                let user = &kc["users"][0]["user"];
                if distro == "microk8s" {
                    assert!(user["token"].is_string(), "microk8s uses a bearer token");
                } else {
                    assert!(user["client-certificate-data"].is_string(), "{distro}");
                    assert!(user["client-key-data"].is_string(), "{distro}");
                }

                // An independent client using only the kubeconfig can call the API ...
                let client = Client::from_kubeconfig(&c.kubeconfig_path());
                let (code, body) = client.get("/api/v1/namespaces/default/serviceaccounts/default");
                assert_eq!(code, 200, "{distro}: {body}");
                assert_eq!(client.get("/readyz"), (200, "ok".to_string()));
                // ... and without credentials only the health endpoints answer.
                let anon = Client::anonymous(&c);
                assert_eq!(anon.get("/livez").0, 200);
                let (code, body) = anon.get("/api/v1/namespaces/default/serviceaccounts/default");
                assert_eq!(code, 401);
                let status: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(status["kind"], "Status");
                assert_eq!(status["reason"], "Unauthorized");

                // Tokens: iss = first issuer, aud = the api-audiences.
                let token = c.token("default", "default", &[]).unwrap();
                let (_, cl) = claims(&token);
                assert_eq!(cl["iss"], expected.issuers[0].as_str(), "{distro}");
                assert_eq!(cl["aud"], json!(expected.audiences), "{distro}");
                assert!(c.review(&token).unwrap(), "{distro}");

                let env = c.env();
                if c.unit().is_some() {
                    assert_eq!(env.len(), 1);
                    assert_eq!(env[0].0, "DBUS_SYSTEM_BUS_ADDRESS");
                    assert!(env[0].1.starts_with("unix:path="), "{env:?}");
                } else {
                    assert!(env.is_empty());
                    assert!(c.status().pid.is_some());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn only_the_admin_kubeconfig_changes_in_the_sysroot() {
    let root = copy_fixture("k3s-default");
    let before = snapshot(root.path());
    let c = Cluster::start_with("k3s", root.path(), fast()).unwrap();
    let after = snapshot(root.path());
    let changed: Vec<_> = after
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(c.kubeconfig_path().ends_with(changed[0]), "{changed:?}");
    // The fixture's kubeconfig pointed elsewhere; now it points at the simulator.
    let original =
        std::fs::read_to_string(fixture_path("k3s-default").join("etc/rancher/k3s/k3s.yaml"))
            .unwrap();
    assert!(!original.contains(&c.url()));
}

// ---------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------

#[test]
fn readyz_answers_500_then_200_after_the_startup_delay() {
    let root = copy_fixture("k0s-default");
    let delay = Duration::from_millis(700);
    let c = Cluster::start_with(
        "k0s",
        root.path(),
        Options {
            startup_delay: delay,
        },
    )
    .unwrap();
    let anon = Client::anonymous(&c);
    c.restart().unwrap();
    let restarted = Instant::now();
    let st = c.status();
    assert_eq!(st.generation, 2);
    assert!(st.running);
    assert_eq!(st.ready_at, None, "not ready yet");
    assert_eq!(st.first_ready_served_at, None);

    let (code, body) = anon.get("/readyz");
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("[-]"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    assert_eq!(anon.get("/livez").0, 200, "alive while starting");
    // API calls wait for readiness.
    let (code, _) = c
        .call(
            Auth::Admin,
            "GET",
            "/api/v1/namespaces/default/serviceaccounts/default",
            None,
        )
        .unwrap();
    assert_eq!(code, 503);

    let mut first_ok = None;
    wait_until("readyz 200", Duration::from_secs(5), || {
        let r = anon.get("/readyz");
        if r == (200, "ok".to_string()) {
            first_ok = Some(Instant::now());
            true
        } else {
            assert_eq!(r.0, 500);
            false
        }
    });
    assert!(first_ok.unwrap() >= restarted + delay);
    let st = c.status();
    let ready_at = st.ready_at.expect("ready");
    let served = st.first_ready_served_at.expect("served");
    assert!(served >= ready_at);
    assert!(ready_at >= restarted);
    // Later 200s do not move the first one.
    assert_eq!(anon.get("/readyz?verbose").0, 200);
    assert_eq!(c.status().first_ready_served_at, Some(served));
    // A fresh generation starts over.
    c.restart().unwrap();
    assert_eq!(c.status().first_ready_served_at, None);
}

// ---------------------------------------------------------------------------
// Tokens: header, claims, signature, checked independently
// ---------------------------------------------------------------------------

/// PyJWT in the repo's virtualenv, if there is one.
fn pyjwt() -> Option<PathBuf> {
    let venv = std::env::var_os("IRSA_AGENT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

const PYJWT_CHECK: &str = r#"
import base64, hashlib, json, sys
import jwt
from cryptography.hazmat.primitives import serialization
token, pem, alg, aud, iss = sys.argv[1:6]
key = serialization.load_pem_public_key(open(pem, "rb").read())
der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
header = jwt.get_unverified_header(token)
claims = jwt.decode(token, key, algorithms=[alg], audience=aud, issuer=iss)
print(json.dumps({"kid": kid, "header": header, "claims": claims}))
"#;

/// Verify with PyJWT: signature, alg, aud, iss, exp; and the kid from the PEM.
fn pyjwt_verify(python: &Path, token: &str, public_pem: &Path, alg: &str, aud: &str, iss: &str) {
    let out = Command::new(python)
        .args(["-c", PYJWT_CHECK, token])
        .arg(public_pem)
        .args([alg, aud, iss])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT rejected the token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["header"]["kid"], v["kid"],
        "kid is SHA-256 of the PKIX DER"
    );
    assert_eq!(v["header"]["alg"], alg);
}

/// Verify a JWS with the RustCrypto crates directly (not the simulator's code).
fn verify_directly(token: &str, public_pem: &Path, alg: &str) {
    let pem = std::fs::read_to_string(public_pem).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let ok = match alg {
        "RS256" => {
            let k = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
            let s = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
            rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k)
                .verify(input.as_bytes(), &s)
                .is_ok()
        }
        "ES256" => {
            let k = p256::ecdsa::VerifyingKey::from_public_key_pem(&pem).unwrap();
            k.verify(
                input.as_bytes(),
                &p256::ecdsa::Signature::from_slice(&sig).unwrap(),
            )
            .is_ok()
        }
        "ES384" => {
            let k = p384::ecdsa::VerifyingKey::from_public_key_pem(&pem).unwrap();
            k.verify(
                input.as_bytes(),
                &p384::ecdsa::Signature::from_slice(&sig).unwrap(),
            )
            .is_ok()
        }
        "ES512" => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let pk = p521::PublicKey::from_public_key_pem(&pem).unwrap();
            let k =
                p521::ecdsa::VerifyingKey::from_encoded_point(&pk.to_encoded_point(false)).unwrap();
            k.verify(
                input.as_bytes(),
                &p521::ecdsa::Signature::from_slice(&sig).unwrap(),
            )
            .is_ok()
        }
        other => panic!("unexpected alg {other}"),
    };
    assert!(
        ok,
        "{alg} signature does not verify with {}",
        public_pem.display()
    );
}

#[test]
fn tokens_carry_the_right_header_and_claims_and_verify_independently() {
    let (root, c) = start("kubeadm-default", "kubeadm");
    let python = pyjwt();
    eprintln!(
        "PyJWT check: {}",
        python
            .as_ref()
            .map(|p| format!("using {}", p.display()))
            .unwrap_or_else(|| "skipped (no .venv with PyJWT)".into())
    );

    // The fixture's own RSA key.
    let sa_pub = root.path().join("etc/kubernetes/pki/sa.pub");
    let before = now();
    let token = c.token("default", "default", &[]).unwrap();
    let (header, cl) = claims(&token);
    assert_eq!(
        header,
        json!({ "alg": "RS256", "kid": kid_of_pem(&sa_pub) })
    );
    assert_eq!(cl["iss"], KUBEADM_ISSUER);
    assert_eq!(cl["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        cl["aud"],
        json!([KUBEADM_ISSUER]),
        "aud defaults to the api-audiences = issuers"
    );
    let iat = cl["iat"].as_i64().unwrap();
    assert!(iat >= before && iat <= now());
    assert_eq!(cl["nbf"], cl["iat"]);
    assert_eq!(cl["exp"].as_i64().unwrap() - iat, 3600);
    let jti = cl["jti"].as_str().unwrap();
    assert_eq!(jti.len(), 36);
    assert_eq!(jti.matches('-').count(), 4);
    assert_eq!(
        cl["kubernetes.io"],
        json!({
            "namespace": "default",
            "serviceaccount": { "name": "default", "uid": c.service_account_uid("default", "default") },
        })
    );
    let keys: Vec<&str> = cl.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "aud",
            "exp",
            "iat",
            "iss",
            "jti",
            "kubernetes.io",
            "nbf",
            "sub"
        ]
    );
    verify_directly(&token, &sa_pub, "RS256");
    if let Some(py) = &python {
        pyjwt_verify(py, &token, &sa_pub, "RS256", KUBEADM_ISSUER, KUBEADM_ISSUER);
    }
    // Explicit audiences are kept as asked; uids are stable per service account.
    let t2 = c
        .token("default", "default", &["sts.amazonaws.com"])
        .unwrap();
    assert_eq!(claims(&t2).1["aud"], json!(["sts.amazonaws.com"]));
    assert_eq!(
        claims(&t2).1["kubernetes.io"]["serviceaccount"]["uid"],
        cl["kubernetes.io"]["serviceaccount"]["uid"]
    );

    // The test keys made with OpenSSL, whose kids OpenSSL computed
    // (tests/fixtures/keys/README.md): install each as the signing key.
    let k = fixture_path("keys");
    let cases = [
        (
            "rsa-pkcs8.pem",
            "rsa-pub.pem",
            "RS256",
            "nY_WL9sGOgReG0lpBM3owkscZt1oBHzWl-BG15fAvFo",
        ),
        (
            "rsa-pkcs1.pem",
            "rsa-pub.pem",
            "RS256",
            "nY_WL9sGOgReG0lpBM3owkscZt1oBHzWl-BG15fAvFo",
        ),
        (
            "ec256-sec1.pem",
            "ec256-pub.pem",
            "ES256",
            "Xj0_wzC1_0kh7cciM2cxDFr_DQG_AzILsQpuq0RYIZo",
        ),
        (
            "ec256-pkcs8.pem",
            "ec256-pub.pem",
            "ES256",
            "Xj0_wzC1_0kh7cciM2cxDFr_DQG_AzILsQpuq0RYIZo",
        ),
        (
            "ec384-sec1.pem",
            "ec384-pub.pem",
            "ES384",
            "lfAyPp9z6gq633yRmI0WT1sI98D25YHd4tLVtXiMdr4",
        ),
        (
            "ec521-sec1.pem",
            "ec521-pub.pem",
            "ES512",
            "KN2VmKXoCa1B4tgl9E2xmmnYeSiW0LbxNm7uA2LBXHU",
        ),
    ];
    let pki = root.path().join("etc/kubernetes/pki");
    for (private, public, alg, kid) in cases {
        std::fs::copy(k.join(private), pki.join("sa.key")).unwrap();
        std::fs::copy(k.join(public), pki.join("sa.pub")).unwrap();
        c.restart().unwrap_or_else(|e| panic!("{private}: {e:#}"));
        c.wait_ready(Duration::from_secs(5)).unwrap();
        let token = c
            .token("kube-system", "coredns", &["sts.amazonaws.com"])
            .unwrap();
        let (header, cl) = claims(&token);
        assert_eq!(header, json!({ "alg": alg, "kid": kid }), "{private}");
        assert_eq!(kid_of_pem(&k.join(public)), kid);
        assert_eq!(cl["sub"], "system:serviceaccount:kube-system:coredns");
        verify_directly(&token, &k.join(public), alg);
        if let Some(py) = &python {
            pyjwt_verify(
                py,
                &token,
                &k.join(public),
                alg,
                "sts.amazonaws.com",
                KUBEADM_ISSUER,
            );
        }
        assert!(
            c.review_full(&token, &["sts.amazonaws.com"]).unwrap()["status"]["authenticated"]
                .as_bool()
                .unwrap()
        );
    }
}

// ---------------------------------------------------------------------------
// TokenRequest and TokenReview over the API
// ---------------------------------------------------------------------------

/// A token made and signed by the test itself with the node's RSA key.
fn forge(sa_key_pem: &Path, kid: &str, claims: &Value) -> String {
    let key =
        rsa::RsaPrivateKey::from_pkcs1_pem(&std::fs::read_to_string(sa_key_pem).unwrap()).unwrap();
    let header = json!({ "alg": "RS256", "kid": kid });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = rsa::pkcs1v15::SigningKey::<Sha256>::new(key).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_vec()))
}

#[test]
fn token_review_accepts_its_own_tokens_and_rejects_bad_ones() {
    let (root, c) = start("kubeadm-default", "kubeadm");
    let sa_key = root.path().join("etc/kubernetes/pki/sa.key");
    let kid = kid_of_pem(&root.path().join("etc/kubernetes/pki/sa.pub"));
    let uid = c.service_account_uid("default", "default");

    let token = c.token("default", "default", &[]).unwrap();
    let r = c.review_full(&token, &[]).unwrap();
    assert_eq!(r["kind"], "TokenReview");
    assert_eq!(r["apiVersion"], "authentication.k8s.io/v1");
    let st = &r["status"];
    assert_eq!(st["authenticated"], true);
    assert_eq!(
        st["user"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(st["user"]["uid"], uid.as_str());
    assert_eq!(
        st["user"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    assert_eq!(st["audiences"], json!([KUBEADM_ISSUER]));
    assert!(st.get("error").is_none());

    let error = |t: &str, auds: &[&str]| -> (bool, String) {
        let r = c.review_full(t, auds).unwrap();
        (
            r["status"]["authenticated"].as_bool().unwrap_or(false),
            r["status"]["error"].as_str().unwrap_or("").to_string(),
        )
    };

    // Tampered signature, tampered payload.
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[10] ^= 1;
    let bad_sig = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&sig));
    let (ok, err) = error(&bad_sig, &[]);
    assert!(!ok);
    assert!(err.contains("cryptographic primitive"), "{err}");
    let parts: Vec<&str> = token.split('.').collect();
    let mut cl = claims(&token).1;
    cl["sub"] = json!("system:serviceaccount:kube-system:admin");
    let bad_payload = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(cl.to_string()),
        parts[2]
    );
    assert!(!error(&bad_payload, &[]).0);
    assert!(!c.review("not-a-jwt").unwrap());

    // Wrong audience: a token for another audience is not for the apiserver ...
    let vault = c.token("default", "default", &["vault"]).unwrap();
    let (ok, err) = error(&vault, &[]);
    assert!(!ok);
    assert_eq!(
        err,
        format!("token audiences [\"vault\"] is invalid for the target audiences [\"{KUBEADM_ISSUER}\"]")
    );
    // ... but is for a TokenReview that asks for that audience.
    let r = c.review_full(&vault, &["vault", "other"]).unwrap();
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(r["status"]["audiences"], json!(["vault"]));

    // Forged tokens signed with the real key.
    let base = json!({
        "aud": [KUBEADM_ISSUER],
        "iat": now(), "nbf": now(), "exp": now() + 600,
        "iss": KUBEADM_ISSUER,
        "kubernetes.io": { "namespace": "default", "serviceaccount": { "name": "default", "uid": uid } },
        "sub": "system:serviceaccount:default:default",
    });
    assert!(
        c.review(&forge(&sa_key, &kid, &base)).unwrap(),
        "a well-formed forged token is fine"
    );
    let mut expired = base.clone();
    expired["exp"] = json!(now() - 120);
    assert_eq!(
        error(&forge(&sa_key, &kid, &expired), &[]),
        (false, "Token has expired.".into())
    );
    let mut in_leeway = base.clone();
    in_leeway["exp"] = json!(now() - 20);
    assert!(
        c.review(&forge(&sa_key, &kid, &in_leeway)).unwrap(),
        "60 s leeway"
    );
    let mut unknown_issuer = base.clone();
    unknown_issuer["iss"] = json!("https://evil.example.com");
    assert_eq!(
        error(&forge(&sa_key, &kid, &unknown_issuer), &[]),
        (false, String::new()),
        "an unknown issuer is not recognized at all (no error, as upstream)"
    );
    assert_eq!(
        error(&forge(&sa_key, "some-other-kid", &base), &[]),
        (false, "invalid signature, no keys found".into())
    );
    let mut ghost = base.clone();
    ghost["kubernetes.io"]["serviceaccount"]["name"] = json!("ghost");
    assert_eq!(
        error(&forge(&sa_key, &kid, &ghost), &[]),
        (false, "serviceaccounts \"ghost\" not found".into())
    );
    let mut wrong_uid = base.clone();
    wrong_uid["kubernetes.io"]["serviceaccount"]["uid"] =
        json!("00000000-0000-4000-8000-000000000000");
    assert!(error(&forge(&sa_key, &kid, &wrong_uid), &[])
        .1
        .contains("does not match claim"));

    // TokenReview without a token.
    let (code, body) = c
        .call(
            Auth::Admin,
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(&json!({ "spec": {} })),
        )
        .unwrap();
    assert_eq!(code, 400, "{body}");
}

#[test]
fn token_request_follows_the_api() {
    let (_root, c) = start("kubeadm-audiences", "kubeadm");
    let path = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let (code, body) = c
        .call(Auth::Admin, "POST", path, Some(&json!({ "spec": {} })))
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let tr: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(tr["metadata"]["name"], "default");
    assert_eq!(tr["metadata"]["namespace"], "default");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    assert_eq!(
        tr["spec"]["audiences"],
        json!([KUBEADM_ISSUER, "vault"]),
        "empty audiences -> the explicit --api-audiences"
    );
    let exp = tr["status"]["expirationTimestamp"].as_str().unwrap();
    let token = tr["status"]["token"].as_str().unwrap();
    let cl = claims(token).1;
    assert_eq!(cl["aud"], json!([KUBEADM_ISSUER, "vault"]));
    // RFC 3339, and the same instant as the token's exp.
    assert_eq!(exp.len(), 20, "{exp}");
    assert!(exp.ends_with('Z'));
    let (date, time) = exp.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let t: Vec<i64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    let days = {
        // days from civil (Howard Hinnant), independent of the simulator's formatter
        let (y, m, dd) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + dd - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    };
    assert_eq!(
        days * 86400 + t[0] * 3600 + t[1] * 60 + t[2],
        cl["exp"].as_i64().unwrap()
    );

    // Too short a lifetime: 422 Invalid with upstream's message.
    let (code, body) = c
        .call(
            Auth::Admin,
            "POST",
            path,
            Some(&json!({ "spec": { "expirationSeconds": 60 } })),
        )
        .unwrap();
    assert_eq!(code, 422, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
    );
    let (code, body) = c
        .call(
            Auth::Admin,
            "POST",
            path,
            Some(&json!({ "spec": { "expirationSeconds": 600 } })),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");

    // Unknown service account: 404 Status; pre-created and created ones work.
    let (code, body) = c
        .call(
            Auth::Admin,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/nobody/token",
            Some(&json!({ "spec": {} })),
        )
        .unwrap();
    assert_eq!(code, 404);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["message"], "serviceaccounts \"nobody\" not found");
    assert!(c.token("kube-system", "kube-proxy", &[]).is_ok());
    assert!(
        c.token("apps", "default", &[]).is_ok(),
        "default exists in every namespace"
    );
    assert!(c.token("apps", "web", &[]).is_err());
    c.create_service_account("apps", "web");
    let web = c.token("apps", "web", &[]).unwrap();
    assert!(c.review(&web).unwrap());

    // Anything else: 404 Status.
    let (code, body) = c.call(Auth::Admin, "GET", "/api/v1/pods", None).unwrap();
    assert_eq!(code, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["reason"],
        "NotFound"
    );

    // A service-account token may read the discovery documents, nothing else.
    let sa = Auth::Bearer(web);
    let (code, _) = c.call(sa.clone(), "GET", "/openid/v1/jwks", None).unwrap();
    assert_eq!(code, 200);
    let (code, _) = c
        .call(sa, "POST", path, Some(&json!({ "spec": {} })))
        .unwrap();
    assert_eq!(code, 403);
    // A bad bearer token is 401 everywhere, health included.
    let (code, _) = c
        .call(Auth::Bearer("nope".into()), "GET", "/readyz", None)
        .unwrap();
    assert_eq!(code, 401);
}

#[test]
fn discovery_documents_are_served_for_an_https_issuer_only() {
    let (root, c) = start("kubeadm-rotated", "kubeadm");
    let (code, config) = c
        .call(
            Auth::Admin,
            "GET",
            "/.well-known/openid-configuration",
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        config.starts_with(r#"{"issuer":"#),
        "upstream's field order: {config}"
    );
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["issuer"], "https://oidc-b.example.com",
        "the first issuer"
    );
    assert_eq!(
        config["jwks_uri"],
        "https://192.168.56.10:6443/openid/v1/jwks"
    );
    assert_eq!(config["response_types_supported"], json!(["id_token"]));
    assert_eq!(config["subject_types_supported"], json!(["public"]));
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    let (code, jwks) = c.call(Auth::Admin, "GET", "/openid/v1/jwks", None).unwrap();
    assert_eq!(code, 200);
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    let pki = root.path().join("etc/kubernetes/pki");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        [
            kid_of_pem(&pki.join("sa.pub")),
            kid_of_pem(&pki.join("oidc-b.pub"))
        ]
    );
    for k in jwks["keys"].as_array().unwrap() {
        assert_eq!(k["use"], "sig");
        assert_eq!(k["kty"], "RSA");
        assert_eq!(k["alg"], "RS256");
        assert_eq!(k["e"], "AQAB");
    }

    // An issuer that is not an https URL: no discovery.
    edit(root.path(), MANIFEST, |t| {
        t.replace("https://oidc-b.example.com", "oidc-b")
    });
    wait_until("the kubelet restart", Duration::from_secs(5), || {
        c.status().generation == 2
    });
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let (code, _) = c
        .call(
            Auth::Admin,
            "GET",
            "/.well-known/openid-configuration",
            None,
        )
        .unwrap();
    assert_eq!(code, 404);
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

fn refusal(case: &str, distro: &str, rel: &str, f: impl FnOnce(&str) -> String) -> String {
    let root = copy_fixture(case);
    edit(root.path(), rel, f);
    match Cluster::start_with(distro, root.path(), fast()) {
        Ok(_) => panic!("{case}: the simulated apiserver started"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn starts_are_refused_like_kube_apiserver_refuses_them() {
    let issuer_line = format!("    - --service-account-issuer={KUBEADM_ISSUER}\n");
    let e = refusal("kubeadm-default", "kubeadm", MANIFEST, |t| {
        replace_once(t, &issuer_line, "")
    });
    assert!(
        e.contains("service-account-issuer is a required flag"),
        "{e}"
    );

    let e = refusal("kubeadm-default", "kubeadm", MANIFEST, |t| {
        replace_once(t, &issuer_line, &format!("{issuer_line}{issuer_line}"))
    });
    assert!(e.contains("is already specified"), "{e}");

    let e = refusal("kubeadm-default", "kubeadm", MANIFEST, |t| {
        replace_once(t, KUBEADM_ISSUER, "https://[::1]:namedport")
    });
    assert!(e.contains("contained a ':' but was not a valid URL"), "{e}");
    assert!(e.contains("invalid port \":namedport\" after host"), "{e}");

    let e = refusal("kubeadm-default", "kubeadm", MANIFEST, |t| {
        replace_once(t, "pki/sa.pub", "pki/missing.pub")
    });
    assert!(
        e.contains("open /etc/kubernetes/pki/missing.pub: no such file or directory"),
        "{e}"
    );

    let e = refusal(
        "microk8s-default",
        "microk8s",
        "var/snap/microk8s/current/args/kube-apiserver",
        |t| replace_once(t, "certs/serviceaccount.key\n", "certs/missing.key\n"),
    );
    assert!(e.contains("no such file or directory"), "{e}");

    // The signing key's public half is in no key file (the simulator's own check).
    let e = refusal("kubeadm-custom-key", "kubeadm", MANIFEST, |t| {
        replace_once(
            t,
            "    - --service-account-key-file=/etc/kubernetes/pki/irsa.pub\n",
            "",
        )
    });
    assert!(
        e.contains("is in none of the --service-account-key-file files"),
        "{e}"
    );

    // A key file outside the static pod's mounts does not exist for the apiserver ...
    let root = copy_fixture("kubeadm-default");
    std::fs::create_dir_all(root.path().join("etc/irsa")).unwrap();
    std::fs::copy(
        root.path().join("etc/kubernetes/pki/sa.pub"),
        root.path().join("etc/irsa/sa.pub"),
    )
    .unwrap();
    edit(root.path(), MANIFEST, |t| {
        replace_once(t, "/etc/kubernetes/pki/sa.pub", "/etc/irsa/sa.pub")
    });
    let e = format!(
        "{:#}",
        Cluster::start_with("kubeadm", root.path(), fast())
            .err()
            .unwrap()
    );
    assert!(
        e.contains("open /etc/irsa/sa.pub: no such file or directory"),
        "{e}"
    );
    // ... unless the pod mounts it (a hostPath volume added to the manifest).
    edit(root.path(), MANIFEST, |t| {
        let t = replace_once(
            t,
            "    volumeMounts:\n",
            "    volumeMounts:\n    - mountPath: /etc/irsa\n      name: irsa\n      readOnly: true\n",
        );
        replace_once(
            &t,
            "  volumes:\n",
            "  volumes:\n  - hostPath:\n      path: /etc/irsa\n      type: DirectoryOrCreate\n    name: irsa\n",
        )
    });
    let c = Cluster::start_with("kubeadm", root.path(), fast()).unwrap();
    assert!(c.status().running);
    drop(c);
    // ... and on a node without a pod (MicroK8s) the same path is fine.
    let root = copy_fixture("microk8s-default");
    std::fs::create_dir_all(root.path().join("etc/irsa")).unwrap();
    std::fs::copy(
        fixture_path("keys").join("rsa-pub.pem"),
        root.path().join("etc/irsa/extra.pub"),
    )
    .unwrap();
    edit(
        root.path(),
        "var/snap/microk8s/current/args/kube-apiserver",
        |t| format!("{t}--service-account-key-file=/etc/irsa/extra.pub\n"),
    );
    let c = Cluster::start_with("microk8s", root.path(), fast()).unwrap();
    assert_eq!(c.status().settings.unwrap().key_files.len(), 2);
}

#[test]
fn without_key_files_the_serving_key_verifies_tokens_as_upstream_falls_back() {
    let key_file = "    - --service-account-key-file=/etc/kubernetes/pki/sa.pub\n";
    let signing = "    - --service-account-signing-key-file=/etc/kubernetes/pki/sa.key\n";
    // A signing key but no key file: refused.
    let e = refusal("kubeadm-default", "kubeadm", MANIFEST, |t| {
        replace_once(t, key_file, "")
    });
    assert!(e.contains("either `--service-account-key-file` or `--service-account-signing-endpoint` must be set"), "{e}");

    // Neither: --tls-private-key-file verifies tokens; no TokenRequest without a signing key.
    let root = copy_fixture("kubeadm-default");
    edit(root.path(), MANIFEST, |t| {
        let t = replace_once(t, key_file, "");
        let t = replace_once(&t, signing, "");
        replace_once(&t, "pki/apiserver.key", "pki/sa.key")
    });
    let c = Cluster::start_with("kubeadm", root.path(), fast()).unwrap();
    assert!(c.status().settings.unwrap().key_files.is_empty());
    assert!(c
        .token("default", "default", &[])
        .unwrap_err()
        .to_string()
        .contains("404"));
    let sa_key = root.path().join("etc/kubernetes/pki/sa.key");
    let kid = kid_of_pem(&root.path().join("etc/kubernetes/pki/sa.pub"));
    let token = forge(
        &sa_key,
        &kid,
        &json!({
            "aud": [KUBEADM_ISSUER], "iat": now(), "nbf": now(), "exp": now() + 600,
            "iss": KUBEADM_ISSUER,
            "kubernetes.io": { "namespace": "default", "serviceaccount": {
                "name": "default", "uid": c.service_account_uid("default", "default") } },
            "sub": "system:serviceaccount:default:default",
        }),
    );
    assert!(c.review(&token).unwrap());
}

#[test]
fn key_files_without_a_usable_key_are_refused() {
    let k = fixture_path("keys");
    for (file, ok) in [
        ("rsa-pkcs1-pub.pem", false), // PKCS#1 RSA PUBLIC KEY: skipped by keyutil
        ("ec256-pkcs8.pem", false),   // EC private key in PKCS#8: skipped by keyutil
        ("ed25519-pub.pem", false),
        ("not-a-key.txt", false),
        ("rsa-encrypted.pem", false),
        ("rsa-cert.pem", true), // a certificate's key counts
        ("multi.pem", true),
    ] {
        let root = copy_fixture("kubeadm-default");
        let pki = root.path().join("etc/kubernetes/pki");
        // The signing key stays; its public half goes into a second key file.
        std::fs::copy(pki.join("sa.pub"), pki.join("sa-real.pub")).unwrap();
        std::fs::copy(k.join(file), pki.join("sa.pub")).unwrap();
        edit(root.path(), MANIFEST, |t| {
            replace_once(
                t,
                "    - --service-account-key-file=/etc/kubernetes/pki/sa.pub\n",
                "    - --service-account-key-file=/etc/kubernetes/pki/sa.pub\n    - --service-account-key-file=/etc/kubernetes/pki/sa-real.pub\n",
            )
        });
        let r = Cluster::start_with("kubeadm", root.path(), fast());
        match (r, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(
                format!("{e:#}").contains(
                    "error reading public key file /etc/kubernetes/pki/sa.pub: data does not contain any valid RSA or ECDSA public keys"
                ),
                "{file}: {e:#}"
            ),
            (Ok(_), false) => panic!("{file}: started"),
            (Err(e), true) => panic!("{file}: {e:#}"),
        }
    }
}

#[test]
fn signing_keys_are_read_like_keyutil_and_the_token_generator() {
    let k = fixture_path("keys");
    let read = |f: &str| keys::parse_signing_key_pem(&std::fs::read(k.join(f)).unwrap());
    for (f, alg) in [
        ("rsa-pkcs1.pem", "RS256"),
        ("rsa-pkcs8.pem", "RS256"),
        ("ec256-sec1.pem", "ES256"),
        ("ec256-pkcs8.pem", "ES256"),
        ("ec384-sec1.pem", "ES384"),
        ("ec521-sec1.pem", "ES512"),
        ("multi.pem", "RS256"), // EC PARAMETERS and PUBLIC KEY blocks skipped
    ] {
        assert_eq!(
            read(f).unwrap_or_else(|e| panic!("{f}: {e:?}")).alg(),
            alg,
            "{f}"
        );
    }
    assert!(matches!(
        read("ed25519.pem"),
        Err(SigningKeyError::Generator(_))
    ));
    for f in [
        "rsa-pub.pem",
        "rsa-cert.pem",
        "rsa-encrypted.pem",
        "rsa-encrypted-legacy.pem",
        "secp256k1-sec1.pem",
        "not-a-key.txt",
    ] {
        assert!(matches!(read(f), Err(SigningKeyError::Parse(_))), "{f}");
    }

    // And a start with an unusable signing key is refused with upstream's words.
    let root = copy_fixture("kubeadm-default");
    let refusal = || {
        format!(
            "{:#}",
            Cluster::start_with("kubeadm", root.path(), fast())
                .err()
                .unwrap()
        )
    };
    std::fs::copy(
        k.join("ed25519.pem"),
        root.path().join("etc/kubernetes/pki/sa.key"),
    )
    .unwrap();
    let e = refusal();
    assert!(
        e.contains("failed to build token generator: unknown private key type ed25519.PrivateKey"),
        "{e}"
    );
    std::fs::copy(
        k.join("rsa-pub.pem"),
        root.path().join("etc/kubernetes/pki/sa.key"),
    )
    .unwrap();
    let e = refusal();
    assert!(
        e.contains("failed to parse service-account-issuer-key-file: error reading private key file /etc/kubernetes/pki/sa.key: data does not contain a valid RSA or ECDSA private key"),
        "{e}"
    );
}

#[test]
fn public_keys_are_read_like_client_go_keyutil() {
    let k = fixture_path("keys");
    let read = |f: &str| keys::parse_public_keys_pem(&std::fs::read(k.join(f)).unwrap());
    let kids = |v: Vec<PublicKey>| -> Vec<(String, &'static str)> {
        v.iter().map(|k| (k.kid(), k.alg())).collect()
    };
    let rsa = "nY_WL9sGOgReG0lpBM3owkscZt1oBHzWl-BG15fAvFo".to_string();
    let ec384 = "lfAyPp9z6gq633yRmI0WT1sI98D25YHd4tLVtXiMdr4".to_string();
    // multi.pem: EC PARAMETERS (skipped), RSA PUBLIC KEY? no: PUBLIC KEY (rsa),
    // PUBLIC KEY (ec384), RSA PRIVATE KEY (rsa again): three keys, in order.
    assert_eq!(
        kids(read("multi.pem").unwrap()),
        [
            (rsa.clone(), "RS256"),
            (ec384.clone(), "ES384"),
            (rsa.clone(), "RS256")
        ]
    );
    for f in [
        "rsa-pub.pem",
        "rsa-pkcs1.pem",
        "rsa-pkcs8.pem",
        "rsa-cert.pem",
    ] {
        assert_eq!(kids(read(f).unwrap()), [(rsa.clone(), "RS256")], "{f}");
    }
    assert_eq!(kids(read("ec384-sec1.pem").unwrap()), [(ec384, "ES384")]);
    for f in ["ec256-sec1.pem", "ec256-pub.pem"] {
        assert_eq!(
            read(f).unwrap()[0].kid(),
            "Xj0_wzC1_0kh7cciM2cxDFr_DQG_AzILsQpuq0RYIZo",
            "{f}"
        );
    }
    for f in [
        "rsa-pkcs1-pub.pem",
        "ec256-pkcs8.pem",
        "ed25519.pem",
        "ed25519-pub.pem",
        "secp256k1-pub.pem",
        "secp256k1-sec1.pem",
        "rsa-encrypted.pem",
        "rsa-encrypted-legacy.pem",
        "not-a-key.txt",
    ] {
        assert!(read(f).is_err(), "{f}");
    }
    // Go's pem.Decode: text around blocks is ignored, a block with junk after
    // its END line is skipped, the type of the block does not matter here.
    let pem = std::fs::read_to_string(k.join("rsa-pub.pem")).unwrap();
    let relabeled = pem.replace("PUBLIC KEY", "WHATEVER");
    assert_eq!(read_str(&format!("junk\n{relabeled}trailer\n")).len(), 1);
    let junk_after_end = pem.replace("-----END PUBLIC KEY-----", "-----END PUBLIC KEY----- x");
    assert!(keys::parse_public_keys_pem(junk_after_end.as_bytes()).is_err());
    assert_eq!(
        keys::pem_blocks(format!("{junk_after_end}{pem}").as_bytes()).len(),
        1
    );
}

fn read_str(s: &str) -> Vec<PublicKey> {
    keys::parse_public_keys_pem(s.as_bytes()).unwrap()
}

#[test]
fn issuer_strings_are_checked_like_go_url_parse() {
    for ok in [
        "https://kubernetes.default.svc",
        "https://oidc.example.com/path",
        "kubernetes.default.svc:443",
        "urn:k8s",
        "https://[::1]:6443",
    ] {
        assert!(go_url_parse(ok).is_ok(), "{ok}");
    }
    for (bad, why) in [
        (
            "https://[::1]:namedport",
            "invalid port \":namedport\" after host",
        ),
        (":foo", "missing protocol scheme"),
        ("1a:b", "first path segment in URL cannot contain colon"),
        (
            "https://exa mple.com",
            "invalid character \" \" in host name",
        ),
        ("https://example.com/%zz", "invalid URL escape \"%zz\""),
        ("https://example.com:x", "invalid port \":x\" after host"),
        ("https://[::1", "missing ']' in host"),
        ("https://a\tb:1", "invalid control character in URL"),
    ] {
        let e = go_url_parse(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad} parsed"));
        assert!(e.contains(why), "{bad}: {e}");
    }
    let u = go_url_parse("https://x.example.com/a?b#c").unwrap();
    assert!(u.has_query && u.has_fragment);
}

#[test]
fn static_pod_mounts_decide_what_the_apiserver_sees() {
    let root = copy_fixture("minikube-default");
    let manifest = std::fs::read_to_string(root.path().join(MANIFEST)).unwrap();
    let mounts = support::sim::startup::static_pod_mounts(&manifest).unwrap();
    let view = FileView {
        root: root.path(),
        mounts: Some(mounts),
        unreadable: &[],
    };
    assert_eq!(
        view.host_path("/var/lib/minikube/certs/sa.pub").as_deref(),
        Some("/var/lib/minikube/certs/sa.pub")
    );
    assert!(view.read("/var/lib/minikube/certs/sa.pub").is_ok());
    assert_eq!(view.host_path("/etc/kubernetes/pki/sa.pub"), None);
    assert_eq!(view.host_path("/var/lib/minikube/certsX/sa.pub"), None);
    assert!(view.host_path("/etc/ssl/certs/ca.pem").is_some());
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

#[test]
fn unreadable_prefix_refuses_until_cleared_and_refused_starts_refuse_connections() {
    let (_root, c) = start("rke2-default", "rke2");
    let port = c.port();
    assert!(!refused(port));
    c.inject(Fault::UnreadablePrefix(
        "/var/lib/rancher/rke2/server/tls/".into(),
    ));
    let e = format!("{:#}", c.restart().err().unwrap());
    assert!(
        e.contains("open /var/lib/rancher/rke2/server/tls/service.current.key: permission denied"),
        "{e}"
    );
    let st = c.status();
    assert!(!st.running);
    assert_eq!(st.generation, 2);
    assert!(st.last_start_error.unwrap().contains("permission denied"));
    assert!(refused(port), "a refused start has no listener");
    assert!(Client::anonymous(&c)
        .request("GET", "/readyz", None)
        .is_err());
    // Persistent: another restart is refused too.
    assert!(c.restart().is_err());
    c.clear_faults();
    c.restart().unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert!(!refused(port), "same port again");
    assert_eq!(c.status().generation, 4);
    assert_eq!(c.status().last_start_error, None);
}

#[test]
fn wrong_issuer_on_next_start_is_one_shot() {
    let (_root, c) = start("k0s-default", "k0s");
    c.inject(Fault::WrongIssuerOnNextStart(
        "https://wrong.example.com".into(),
    ));
    // Not used before the next start.
    assert_eq!(
        claims(&c.token("default", "default", &[]).unwrap()).1["iss"],
        "https://kubernetes.default.svc"
    );
    c.restart().unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let bad = c.token("default", "default", &[]).unwrap();
    assert_eq!(claims(&bad).1["iss"], "https://wrong.example.com");
    assert!(!c.review(&bad).unwrap());
    c.restart().unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let good = c.token("default", "default", &[]).unwrap();
    assert_eq!(claims(&good).1["iss"], "https://kubernetes.default.svc");
    assert!(c.review(&good).unwrap());
}

#[test]
fn without_the_strict_check_a_foreign_signing_key_starts_but_its_tokens_fail() {
    let root = copy_fixture("kubeadm-custom-key");
    let c = Cluster::start_with("kubeadm", root.path(), fast()).unwrap();
    c.set_strict_signing_key_check(false);
    edit(root.path(), MANIFEST, |t| {
        replace_once(
            t,
            "    - --service-account-key-file=/etc/kubernetes/pki/irsa.pub\n",
            "",
        )
    });
    wait_until("the kubelet restart", Duration::from_secs(5), || {
        c.status().generation == 2
    });
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let token = c.token("default", "default", &[]).unwrap();
    let r = c.review_full(&token, &[]).unwrap();
    assert_eq!(r["status"]["authenticated"].as_bool(), None);
    assert_eq!(r["status"]["error"], "invalid signature, no keys found");
}

// ---------------------------------------------------------------------------
// Fake systemd over a real private D-Bus
// ---------------------------------------------------------------------------

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
}

/// The result of job `job` from its JobRemoved signal.
async fn wait_removed(removed: &mut JobRemovedStream, job: &OwnedObjectPath, unit: &str) -> String {
    let fut = async {
        loop {
            let s = removed.next().await.expect("signal stream open");
            let a = s.args().unwrap();
            if a.job().as_str() == job.as_str() {
                assert_eq!(*a.unit(), unit);
                return a.result().to_string();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("JobRemoved within 10 s")
}

fn dbus_error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.as_str().to_string(),
        zbus::Error::FDO(f) => format!("{f}"),
        other => format!("{other}"),
    }
}

#[test]
fn fake_systemd_restarts_the_unit_and_reports_job_removed() {
    let (root, c) = start("k3s-default", "k3s");
    let unit = c.unit().unwrap();
    assert_eq!(unit, "k3s.service");
    let old_token = c.token("default", "default", &[]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(c.bus_address().unwrap().as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let m = ManagerProxy::new(&conn).await.unwrap();
        m.subscribe().await.unwrap();
        let mut removed = m.receive_job_removed().await.unwrap();
        let restart = |mode: &'static str| {
            let m = m.clone();
            async move { m.restart_unit(unit, mode).await }
        };

        // Accepted restart: done, and the apiserver came back.
        let job = restart("replace").await.unwrap();
        assert!(job.as_str().starts_with("/org/freedesktop/systemd1/job/"), "{job}");
        assert_eq!(wait_removed(&mut removed, &job, unit).await, "done");
        assert_eq!(c.status().generation, 2);
        assert!(c.status().running);

        let unit_path = m.get_unit(unit).await.unwrap();
        assert_eq!(unit_path.as_str(), "/org/freedesktop/systemd1/unit/k3s_2eservice");
        let u = UnitProxy::builder(&conn)
            .path(unit_path.clone())
            .unwrap()
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .unwrap();
        assert_eq!(u.active_state().await.unwrap(), "active");

        // Another unit: NoSuchUnit, recorded, nothing restarted.
        let e = m.restart_unit("nginx.service", "replace").await.unwrap_err();
        assert_eq!(dbus_error_name(&e), "org.freedesktop.systemd1.NoSuchUnit");
        let e = m.get_unit("nginx.service").await.unwrap_err();
        assert_eq!(dbus_error_name(&e), "org.freedesktop.systemd1.NoSuchUnit");
        assert_eq!(c.status().generation, 2);

        // A refused start: failed, and nothing listens.
        c.inject(Fault::UnreadablePrefix("/var/lib/rancher/k3s/server/tls/service.current.key".into()));
        let job = restart("replace").await.unwrap();
        assert_eq!(wait_removed(&mut removed, &job, unit).await, "failed");
        assert!(!c.status().running);
        assert!(refused(c.port()));
        assert_eq!(u.active_state().await.unwrap(), "failed");

        // A new issuer in a drop-in; the restart picks it up.
        c.clear_faults();
        std::fs::create_dir_all(root.path().join("etc/rancher/k3s/config.yaml.d")).unwrap();
        std::fs::write(
            root.path().join("etc/rancher/k3s/config.yaml.d/90-irsa.yaml"),
            "kube-apiserver-arg+:\n- service-account-issuer-=https://oidc.example.com\n- api-audiences+=sts.amazonaws.com\n",
        )
        .unwrap();
        let job = restart("replace").await.unwrap();
        assert_eq!(wait_removed(&mut removed, &job, unit).await, "done");
    });
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let st = c.status();
    assert_eq!(st.generation, 4);
    assert_eq!(
        st.settings.as_ref().unwrap().issuers,
        ["https://oidc.example.com", KUBEADM_ISSUER]
    );
    let new = c
        .token("default", "default", &["sts.amazonaws.com"])
        .unwrap();
    assert_eq!(claims(&new).1["iss"], "https://oidc.example.com");
    assert!(
        c.review(&old_token).unwrap(),
        "tokens of the old issuer still authenticate"
    );
    assert_eq!(
        c.restarts(),
        [
            ("k3s.service".to_string(), "replace".to_string()),
            ("nginx.service".to_string(), "replace".to_string()),
            ("k3s.service".to_string(), "replace".to_string()),
            ("k3s.service".to_string(), "replace".to_string()),
        ]
    );
    assert_eq!(c.subscribe_calls(), 1);
}

// ---------------------------------------------------------------------------
// Fake kubelet and stand-in processes
// ---------------------------------------------------------------------------

/// `(comm, cmdline)` of a process from /proc.
fn proc_info(pid: u32) -> Option<(String, Vec<String>)> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some((comm.trim_end().to_string(), args))
}

/// Live processes named kube-apiserver that run this cluster's stand-in.
fn stand_ins(script: &Path) -> Vec<u32> {
    let script = script.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, s)| s.trim_start().starts_with('Z'));
            !zombie
                && proc_info(*pid)
                    .is_some_and(|(comm, args)| comm == "kube-apiserver" && args.contains(&script))
        })
        .collect()
}

#[test]
fn fake_kubelet_restarts_the_pod_when_the_manifest_changes() {
    let (root, c) = start("kubeadm-default", "kubeadm");
    let script = c.stand_in_path().unwrap();
    let pid1 = c.status().pid.unwrap();
    let (comm, args) = proc_info(pid1).unwrap();
    assert_eq!(comm, "kube-apiserver");
    assert_eq!(args[0], "/bin/sh");
    assert_eq!(Path::new(&args[1]), script);
    assert!(args.contains(&format!("--service-account-issuer={KUBEADM_ISSUER}")));
    assert_eq!(args[2..], c.status().args[..]);
    assert_eq!(stand_ins(&script), [pid1]);
    let old_token = c.token("default", "default", &[]).unwrap();

    // The new issuer first (it signs), the old one kept (still accepted).
    edit(root.path(), MANIFEST, |t| {
        replace_once(
            t,
            "    - --service-account-issuer=",
            "    - --service-account-issuer=https://oidc.example.com\n    - --service-account-issuer=",
        )
    });
    wait_until("the kubelet restart", Duration::from_secs(5), || {
        c.status().generation == 2
    });
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let pid2 = c.status().pid.unwrap();
    assert_ne!(pid1, pid2);
    assert!(
        proc_info(pid1).is_none_or(|(comm, _)| comm != "kube-apiserver"),
        "the old process is gone"
    );
    let (comm, args) = proc_info(pid2).unwrap();
    assert_eq!(comm, "kube-apiserver");
    assert!(args.contains(&"--service-account-issuer=https://oidc.example.com".to_string()));
    assert_eq!(stand_ins(&script), [pid2]);
    assert_eq!(
        claims(&c.token("default", "default", &[]).unwrap()).1["iss"],
        "https://oidc.example.com"
    );
    assert!(
        c.review(&old_token).unwrap(),
        "the old issuer is still accepted and an audience"
    );

    // A broken manifest: the pod crash-loops, the port refuses connections.
    edit(root.path(), MANIFEST, |t| {
        replace_once(t, "pki/sa.pub", "pki/gone.pub")
    });
    // generation counts attempts: it moves before the attempt is decided.
    wait_until("the refused start", Duration::from_secs(5), || {
        let st = c.status();
        st.generation == 3 && st.last_start_error.is_some()
    });
    let st = c.status();
    assert!(!st.running);
    assert!(st
        .last_start_error
        .unwrap()
        .contains("gone.pub: no such file or directory"));
    assert!(refused(c.port()));
    assert!(proc_info(pid2).is_none_or(|(comm, _)| comm != "kube-apiserver"));
    wait_until(
        "the crashing stand-in to exit",
        Duration::from_secs(5),
        || stand_ins(&script).is_empty(),
    );

    // Fixed again.
    edit(root.path(), MANIFEST, |t| {
        replace_once(t, "pki/gone.pub", "pki/sa.pub")
    });
    wait_until("the kubelet restart", Duration::from_secs(5), || {
        c.status().generation == 4
    });
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(stand_ins(&script).len(), 1);
    drop(c);
    assert!(
        stand_ins(&script).is_empty(),
        "dropping the cluster stops the stand-in"
    );
}

// ---------------------------------------------------------------------------
// kube-rs against the simulator
// ---------------------------------------------------------------------------

#[test]
fn kube_rs_can_request_and_review_tokens_with_the_admin_kubeconfig() {
    use k8s_openapi::api::authentication::v1::{
        TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
    };
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::PostParams;

    for (case, distro) in [
        ("kubeadm-default", "kubeadm"),
        ("microk8s-default", "microk8s"),
    ] {
        let (_root, c) = start(case, distro);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let token = rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(c.kubeconfig_path()).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            let client = kube::Client::try_from(config).unwrap();
            let ready = client
                .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
                .await
                .unwrap();
            assert_eq!(ready, "ok");
            let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), "default");
            let tr = sas
                .create_token_request(
                    "default",
                    &PostParams::default(),
                    &TokenRequest {
                        spec: TokenRequestSpec {
                            audiences: vec!["sts.amazonaws.com".into()],
                            expiration_seconds: Some(3600),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let status = tr.status.unwrap();
            let reviews: kube::Api<TokenReview> = kube::Api::all(client);
            let review = reviews
                .create(
                    &PostParams::default(),
                    &TokenReview {
                        spec: TokenReviewSpec {
                            token: Some(status.token.clone()),
                            audiences: Some(vec!["sts.amazonaws.com".into()]),
                        },
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let rs = review.status.unwrap();
            assert_eq!(rs.authenticated, Some(true));
            assert_eq!(
                rs.user.unwrap().username.as_deref(),
                Some("system:serviceaccount:default:default")
            );
            status.token
        });
        assert_eq!(
            claims(&token).1["aud"],
            json!(["sts.amazonaws.com"]),
            "{distro}"
        );
    }
}
