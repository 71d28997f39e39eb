//! The simulated kube-apiserver process: start/stop, the HTTPS listener and
//! the API it serves.
//!
//! Lifecycle: a start re-reads the node's files (argv per distro, then
//! `startup::evaluate`). A refused start leaves NO listener on the port, so
//! connections are refused, as with a crash-looping apiserver. An accepted
//! start listens at once; `/readyz` answers 500 until `startup_delay` has
//! passed, then 200 `ok`. A stop closes the listener and every connection.
//!
//! Requests (JSON in Kubernetes shapes):
//! - anonymous: `GET /readyz`, `/livez`, `/healthz` (+ `/<check>` subpaths),
//!   `/version` (as `system:public-info-viewer` allows); anything else
//!   anonymous -> 401 (as with `--anonymous-auth=false`);
//! - a bad bearer token -> 401 on any path;
//! - admin (client certificate with O=system:masters, or the MicroK8s admin
//!   token): everything below;
//! - a service-account token: only the discovery documents (as
//!   `system:service-account-issuer-discovery`), else 403;
//! - before ready, API calls (not health) -> 503 (the simulator's choice, so a
//!   client that does not wait for readiness is noticed);
//! - `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token` (TokenRequest),
//!   `GET /api/v1/namespaces/{ns}/serviceaccounts/{name}`,
//!   `POST /apis/authentication.k8s.io/v1/tokenreviews`,
//!   `GET /.well-known/openid-configuration`, `GET /openid/v1/jwks`;
//! - anything else: 404 Status.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::super::effective::{apiserver_args, SaSettings};
use super::jwt::{self, Authn, TokenSpec, Validation};
use super::keys::{PublicKey, SigningKey};
use super::startup::{self, FileView};
use super::systemd::UnitState;
use super::{RestartKind, Shared};

/// One accepted start: what the apiserver serves until it stops.
pub struct Instance {
    pub generation: u64,
    pub ready_at: Instant,
    pub settings: SaSettings,
    pub keys: Vec<PublicKey>,
    pub signer: Option<SigningKey>,
    /// `iss` of the tokens this instance issues (the first issuer, unless
    /// `Fault::WrongIssuerOnNextStart`).
    pub token_issuer: String,
    pub discovery: Option<(String, String)>,
}

/// Stop the apiserver, then start it from the current files. `Err`: refused.
pub async fn restart(shared: &Arc<Shared>) -> Result<(), String> {
    let _life = shared.lifecycle.lock().await;
    stop(shared).await;
    start(shared).await
}

/// Stop and stay stopped (a removed static-pod manifest).
pub async fn stop_for_good(shared: &Arc<Shared>, why: &str) {
    let _life = shared.lifecycle.lock().await;
    stop(shared).await;
    let mut st = shared.state.lock().unwrap();
    st.last_start_error = Some(why.to_string());
    st.unit_state = UnitState::Inactive;
}

/// Stop whatever runs (listener, connections, stand-in). Caller holds the lifecycle lock.
pub async fn stop(shared: &Arc<Shared>) {
    let (server, stand_in) = {
        let mut st = shared.state.lock().unwrap();
        st.instance = None;
        st.stand_in_pid = None;
        (st.server.take(), st.stand_in.take())
    };
    if let Some(h) = server {
        h.abort();
        let _ = h.await;
    }
    if let Some(child) = stand_in {
        super::kubelet::stop_stand_in(child).await;
    }
}

/// One start attempt from the current files. Caller holds the lifecycle lock
/// and has stopped the previous instance.
pub async fn start(shared: &Arc<Shared>) -> Result<(), String> {
    let (generation, unreadable, strict) = {
        let mut st = shared.state.lock().unwrap();
        if st.closed {
            return Err("(simulator) the cluster is being dropped".into());
        }
        st.generation += 1;
        st.args.clear();
        st.settings = None;
        st.first_ready_served_at = None;
        (
            st.generation,
            st.unreadable.clone(),
            st.strict_signing_key_check,
        )
    };
    let outcome = decide(shared, &unreadable, strict);
    let args = outcome.args.clone();

    // Static pods: the kubelet runs the container whatever happens next.
    if let Some(script) = &shared.stand_in_script {
        match super::kubelet::spawn_stand_in(script, &args, outcome.result.is_err()) {
            Ok(child) => {
                let pid = child.id();
                if outcome.result.is_ok() {
                    let mut st = shared.state.lock().unwrap();
                    st.stand_in = Some(child);
                    st.stand_in_pid = pid;
                } else {
                    // Reap the crashing stand-in so no zombie named kube-apiserver lingers.
                    tokio::spawn(async move {
                        let mut child = child;
                        let _ = child.wait().await;
                    });
                }
            }
            Err(e) => return refuse(shared, generation, args, format!("{e:#}")),
        }
    }

    let accepted = match outcome.result {
        Ok(a) => a,
        Err(e) => return refuse(shared, generation, args, e),
    };

    let listener = match bind(shared.port).await {
        Ok(l) => l,
        Err(e) => {
            return refuse(
                shared,
                generation,
                args,
                format!(
                    "(simulator) cannot listen on 127.0.0.1:{}: {e:#}",
                    shared.port
                ),
            )
        }
    };
    let token_issuer = {
        let mut st = shared.state.lock().unwrap();
        st.wrong_issuer
            .take()
            .unwrap_or_else(|| accepted.settings.issuers[0].clone())
    };
    let instance = Arc::new(Instance {
        generation,
        ready_at: Instant::now() + shared.opts.startup_delay,
        settings: accepted.settings.clone(),
        keys: accepted.keys,
        signer: accepted.signer,
        token_issuer,
        discovery: accepted.discovery,
    });
    let server = tokio::spawn(serve(listener, shared.clone(), instance.clone()));
    let mut st = shared.state.lock().unwrap();
    st.args = args;
    st.settings = Some(accepted.settings);
    st.last_start_error = None;
    st.instance = Some(instance);
    st.server = Some(server);
    st.unit_state = UnitState::Active;
    Ok(())
}

fn refuse(
    shared: &Shared,
    generation: u64,
    args: Vec<String>,
    error: String,
) -> Result<(), String> {
    let mut st = shared.state.lock().unwrap();
    debug_assert_eq!(st.generation, generation);
    st.settings = super::super::effective::sa_settings(&args).ok();
    st.args = args;
    st.last_start_error = Some(error.clone());
    st.unit_state = UnitState::Failed;
    Err(error)
}

struct Decision {
    args: Vec<String>,
    result: Result<startup::Accepted, String>,
}

/// Read the argv and decide the start.
fn decide(shared: &Shared, unreadable: &[String], strict: bool) -> Decision {
    let args = match apiserver_args(&shared.root, shared.profile.name) {
        Ok(a) => a,
        Err(e) => {
            return Decision {
                args: Vec::new(),
                result: Err(format!(
                    "(simulator) reading the apiserver's arguments: {e:#}"
                )),
            }
        }
    };
    let mounts = match &shared.profile.restart {
        RestartKind::StaticPod { manifest } => {
            let text = std::fs::read_to_string(shared.root.join(manifest)).unwrap_or_default();
            match startup::static_pod_mounts(&text) {
                Ok(m) => Some(m),
                Err(e) => {
                    return Decision {
                        args,
                        result: Err(format!("(simulator) reading the pod's volumes: {e:#}")),
                    }
                }
            }
        }
        RestartKind::Systemd { .. } => None,
    };
    let files = FileView {
        root: &shared.root,
        mounts,
        unreadable,
    };
    let result = startup::evaluate(&args, &files, strict);
    Decision { args, result }
}

/// Listen on the cluster's port. The previous instance's sockets can hold
/// it for a moment on a loaded machine (EADDRINUSE): retry for up to 2 s.
async fn bind(port: u16) -> Result<TcpListener> {
    let attempt = || -> std::io::Result<TcpListener> {
        let sock = TcpSocket::new_v4()?;
        sock.set_reuseaddr(true)?;
        sock.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        sock.listen(1024)
    };
    let mut tries = 0;
    loop {
        match attempt() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 100 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            r => return Ok(r?),
        }
    }
}

// ---------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------

type Resp = Response<Full<Bytes>>;

async fn serve(listener: TcpListener, shared: Arc<Shared>, inst: Arc<Instance>) {
    let acceptor = TlsAcceptor::from(shared.server_tls.clone());
    // Dropping this set (when the server task is aborted) aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let inst = inst.clone();
        conns.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| super::tls::cert_identity(c));
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let inst = inst.clone();
                let peer = peer.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &inst, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
enum User {
    Anonymous,
    Admin(String),
    /// Authenticated but not an admin (a certificate without system:masters).
    Other(String),
    ServiceAccount(String),
}

fn respond(code: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(code)
        .header("Content-Type", content_type)
        .body(Full::new(body.into()))
        .expect("a valid response")
}

fn json_resp(code: u16, v: &Value) -> Resp {
    respond(code, "application/json", v.to_string())
}

/// A `metav1.Status` failure.
fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Resp {
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        v["details"] = d;
    }
    json_resp(code, &v)
}

fn not_found() -> Resp {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn sa_not_found(name: &str) -> Resp {
    status(
        404,
        "NotFound",
        &format!("serviceaccounts {name:?} not found"),
        Some(json!({ "name": name, "kind": "serviceaccounts" })),
    )
}

fn validation(shared: &Shared, inst: &Instance, requested: Option<&[String]>) -> ValidationOwned {
    ValidationOwned {
        issuers: inst.settings.issuers.clone(),
        api_audiences: inst.settings.audiences.clone(),
        requested: requested.map(<[String]>::to_vec),
        accounts: shared.accounts.lock().unwrap().clone(),
        seed: shared.seed,
    }
}

/// What token authentication needs, detached from the locks.
struct ValidationOwned {
    issuers: Vec<String>,
    api_audiences: Vec<String>,
    requested: Option<Vec<String>>,
    accounts: std::collections::BTreeSet<(String, String)>,
    seed: [u8; 16],
}

impl ValidationOwned {
    fn run(&self, token: &str, keys: &[PublicKey]) -> Authn {
        let uid = |ns: &str, name: &str| {
            super::account_exists(&self.accounts, ns, name)
                .then(|| super::account_uid(&self.seed, ns, name))
        };
        jwt::authenticate(
            token,
            &Validation {
                issuers: &self.issuers,
                keys,
                api_audiences: &self.api_audiences,
                requested: self.requested.as_deref(),
                now: jwt::now_unix(),
                service_account_uid: &uid,
            },
        )
    }
}

async fn handle(
    shared: &Arc<Shared>,
    inst: &Arc<Instance>,
    peer: Option<(String, Vec<String>)>,
    req: Request<Incoming>,
) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();

    // Authentication: a bearer token wins over the client certificate.
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let user = if let Some(t) = bearer {
        if shared.profile.admin_auth == super::tls::AdminAuth::Token && t == shared.pki.admin_token
        {
            User::Admin("admin".into())
        } else {
            let a = validation(shared, inst, None).run(&t, &inst.keys);
            if !a.authenticated {
                return status(401, "Unauthorized", "Unauthorized", None);
            }
            User::ServiceAccount(a.username())
        }
    } else if let Some((cn, orgs)) = peer {
        if orgs.iter().any(|o| o == "system:masters") {
            User::Admin(cn)
        } else {
            User::Other(cn)
        }
    } else {
        User::Anonymous
    };

    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let health = matches!(segments[0], "readyz" | "livez" | "healthz")
        || path == "/version"
        || path == "/version/";
    if health {
        if method != Method::GET && method != Method::HEAD {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            );
        }
        return health_check(shared, inst, segments[0], &query);
    }
    if matches!(user, User::Anonymous) {
        return status(401, "Unauthorized", "Unauthorized", None);
    }
    if Instant::now() < inst.ready_at {
        return status(
            503,
            "ServiceUnavailable",
            "(simulator) the apiserver is still starting; wait for /readyz",
            None,
        );
    }

    let discovery_path = path == "/.well-known/openid-configuration" || path == "/openid/v1/jwks";
    let username = match &user {
        User::Admin(_) => None,
        User::Other(n) | User::ServiceAccount(n) => Some(n.clone()),
        User::Anonymous => unreachable!(),
    };
    if let Some(name) = username {
        let may = discovery_path && matches!(user, User::ServiceAccount(_));
        if !may {
            return status(
                403,
                "Forbidden",
                &format!(
                    "forbidden: User {name:?} cannot {} path {path:?}",
                    method.as_str().to_lowercase()
                ),
                Some(json!({})),
            );
        }
    }

    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(400, "BadRequest", "could not read the request body", None),
    };

    match (method.clone(), segments.as_slice()) {
        (Method::GET, [".well-known", "openid-configuration"]) => match &inst.discovery {
            Some((config, _)) => Response::builder()
                .status(200)
                .header("Content-Type", "application/json")
                .header("Cache-Control", "public, max-age=3600")
                .body(Full::new(Bytes::from(config.clone())))
                .unwrap(),
            None => not_found(),
        },
        (Method::GET, ["openid", "v1", "jwks"]) => match &inst.discovery {
            Some((_, jwks)) => Response::builder()
                .status(200)
                .header("Content-Type", "application/jwk-set+json")
                .header("Cache-Control", "public, max-age=3600")
                .body(Full::new(Bytes::from(jwks.clone())))
                .unwrap(),
            None => not_found(),
        },
        (Method::POST, ["api", "v1", "namespaces", ns, "serviceaccounts", name, "token"]) => {
            token_request(shared, inst, ns, name, &body)
        }
        (Method::GET, ["api", "v1", "namespaces", ns, "serviceaccounts", name]) => {
            if !super::account_exists(&shared.accounts.lock().unwrap(), ns, name) {
                return sa_not_found(name);
            }
            json_resp(
                200,
                &json!({
                    "kind": "ServiceAccount",
                    "apiVersion": "v1",
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "uid": super::account_uid(&shared.seed, ns, name),
                    },
                }),
            )
        }
        (Method::POST, ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
            token_review(shared, inst, &body)
        }
        _ => not_found(),
    }
}

fn health_check(shared: &Shared, inst: &Instance, which: &str, query: &str) -> Resp {
    if which == "version" {
        return json_resp(
            200,
            &json!({
                "major": "1",
                "minor": "33",
                "gitVersion": "v1.33.0+irsa-agent-simulator",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.24.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }),
        );
    }
    let now = Instant::now();
    let ready = which == "livez" || now >= inst.ready_at;
    let verbose = query
        .split('&')
        .any(|q| q == "verbose" || q.starts_with("verbose="));
    if which != "livez" && ready {
        let mut st = shared.state.lock().unwrap();
        if st.generation == inst.generation && st.first_ready_served_at.is_none() {
            st.first_ready_served_at = Some(now);
        }
    }
    let checks = [
        ("ping", true),
        ("log", true),
        ("etcd", true),
        ("poststarthook/start-apiextensions-controllers", true),
        ("poststarthook/rbac/bootstrap-roles", ready),
        ("poststarthook/bootstrap-controller", ready),
    ];
    if ready && !verbose {
        return respond(200, "text/plain; charset=utf-8", "ok");
    }
    let mut body = String::new();
    for (name, ok) in checks {
        if ok {
            body.push_str(&format!("[+]{name} ok\n"));
        } else {
            body.push_str(&format!("[-]{name} failed: reason withheld\n"));
        }
    }
    if ready {
        body.push_str(&format!("{which} check passed\n"));
        respond(200, "text/plain; charset=utf-8", body)
    } else {
        body.push_str(&format!("{which} check failed\n"));
        respond(500, "text/plain; charset=utf-8", body)
    }
}

/// `pkg/registry/core/serviceaccount/storage/token.go` `TokenREST.Create`.
fn token_request(shared: &Shared, inst: &Instance, ns: &str, name: &str, body: &[u8]) -> Resp {
    let Some(signer) = &inst.signer else {
        // Without --service-account-signing-key-file the subresource is not installed.
        return not_found();
    };
    let mut req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return status(
                400,
                "BadRequest",
                "the body of the request was not a TokenRequest object",
                None,
            )
        }
    };
    if let Some(kind) = req.get("kind").and_then(Value::as_str) {
        if kind != "TokenRequest" {
            return status(
                400,
                "BadRequest",
                &format!("expected a TokenRequest, got {kind}"),
                None,
            );
        }
    }
    let meta_name = req
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !meta_name.is_empty() && meta_name != name {
        return status(
            400,
            "BadRequest",
            &format!(
                "serviceaccount name {name:?} does not match token request name {meta_name:?}"
            ),
            None,
        );
    }
    let meta_ns = req
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !meta_ns.is_empty() && meta_ns != ns {
        return status(
            400,
            "BadRequest",
            &format!("namespace {ns:?} does not match token request namespace {meta_ns:?}"),
            None,
        );
    }
    if !super::account_exists(&shared.accounts.lock().unwrap(), ns, name) {
        return sa_not_found(name);
    }
    if let Some(r) = req.pointer("/spec/boundObjectRef").filter(|r| !r.is_null()) {
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
        let obj = r.get("name").and_then(Value::as_str).unwrap_or("");
        let resource = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            "Node" => "nodes",
            other => {
                return status(
                    400,
                    "BadRequest",
                    &format!("cannot bind token to object of type {other}"),
                    None,
                )
            }
        };
        // No pods, secrets or nodes exist in the simulator.
        return status(
            404,
            "NotFound",
            &format!("{resource} {obj:?} not found"),
            Some(json!({ "name": obj, "kind": resource })),
        );
    }
    let expiration = match req.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => match v.as_i64() {
            Some(n) => n,
            None => {
                return status(
                    400,
                    "BadRequest",
                    "spec.expirationSeconds is not an integer",
                    None,
                )
            }
        },
    };
    let problem = if expiration < 600 {
        Some("may not specify a duration less than 10 minutes")
    } else if expiration > 1i64 << 32 {
        Some("may not specify a duration larger than 2^32 seconds")
    } else {
        None
    };
    if let Some(p) = problem {
        let field_msg = format!("Invalid value: {expiration}: {p}");
        return status(
            422,
            "Invalid",
            &format!("TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: {field_msg}"),
            Some(json!({
                "group": "authentication.k8s.io",
                "kind": "TokenRequest",
                "causes": [{
                    "reason": "FieldValueInvalid",
                    "message": field_msg,
                    "field": "spec.expirationSeconds",
                }],
            })),
        );
    }
    let audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| inst.settings.audiences.clone());
    let now = jwt::now_unix();
    let uid = super::account_uid(&shared.seed, ns, name);
    let token = jwt::issue(
        signer,
        &TokenSpec {
            issuer: &inst.token_issuer,
            namespace: ns,
            name,
            uid: &uid,
            audiences: &audiences,
            issued_at: now,
            expiration_seconds: expiration,
        },
    );
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    if !req.get("metadata").is_some_and(Value::is_object) {
        req["metadata"] = json!({});
    }
    req["metadata"]["name"] = json!(name);
    req["metadata"]["namespace"] = json!(ns);
    req["metadata"]["creationTimestamp"] = json!(jwt::rfc3339(now));
    if !req.get("spec").is_some_and(Value::is_object) {
        req["spec"] = json!({});
    }
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(expiration);
    req["spec"]["boundObjectRef"] = Value::Null;
    req["status"] = json!({
        "token": token,
        "expirationTimestamp": jwt::rfc3339(now + expiration),
    });
    json_resp(201, &req)
}

/// `pkg/registry/authentication/tokenreview/storage.go` `REST.Create`.
fn token_review(shared: &Shared, inst: &Instance, body: &[u8]) -> Resp {
    let mut req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return status(
                400,
                "BadRequest",
                "the body of the request was not a TokenReview object",
                None,
            )
        }
    };
    let token = req
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if token.is_empty() {
        return status(
            400,
            "BadRequest",
            "token is required for TokenReview in authentication",
            None,
        );
    }
    let requested: Option<Vec<String>> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty());
    let a = validation(shared, inst, requested.as_deref()).run(&token, &inst.keys);
    let mut st = json!({ "user": {} });
    if a.authenticated {
        st["authenticated"] = json!(true);
        let mut user = json!({
            "username": a.username(),
            "uid": a.uid,
            "groups": [
                "system:serviceaccounts",
                format!("system:serviceaccounts:{}", a.namespace),
                "system:authenticated",
            ],
        });
        if let Some(jti) = &a.jti {
            user["extra"] =
                json!({ "authentication.kubernetes.io/credential-id": [format!("JTI={jti}")] });
        }
        st["user"] = user;
        st["audiences"] = json!(a.audiences);
    }
    if let Some(e) = &a.error {
        st["error"] = json!(e);
    }
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenReview");
    if !req.get("metadata").is_some_and(Value::is_object) {
        req["metadata"] = json!({});
    }
    req["metadata"]["creationTimestamp"] = Value::Null;
    req["status"] = st;
    json_resp(201, &req)
}

// ---------------------------------------------------------------------------
// The simulator's own HTTPS client (for Cluster::token/review/call)
// ---------------------------------------------------------------------------

/// Credentials for a request through the simulator's HTTPS API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The admin credential of the distribution's kubeconfig.
    Admin,
    Anonymous,
    Bearer(String),
}

/// One HTTPS request to the simulated apiserver: `(status, body)`.
pub async fn request(
    shared: &Shared,
    auth: &Auth,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    let use_cert =
        *auth == Auth::Admin && shared.profile.admin_auth == super::tls::AdminAuth::ClientCert;
    let cfg = shared.pki.client_config(use_cert)?;
    let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, shared.port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{}", shared.port))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .context("TLS handshake with the simulator")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("Host", format!("127.0.0.1:{}", shared.port))
        .header("Accept", "application/json");
    match auth {
        Auth::Bearer(t) => builder = builder.header("Authorization", format!("Bearer {t}")),
        Auth::Admin if !use_cert => {
            builder = builder.header(
                "Authorization",
                format!("Bearer {}", shared.pki.admin_token),
            )
        }
        _ => {}
    }
    let payload = match body {
        Some(v) => {
            builder = builder.header("Content-Type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let resp = sender
        .send_request(builder.body(Full::new(payload))?)
        .await
        .map_err(|e| anyhow!("{method} {path}: {e}"))?;
    let code = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((code.as_u16(), String::from_utf8_lossy(&bytes).into_owned()))
}
