//! A **simulated control plane** for end-to-end tests: no kube-apiserver
//! binary can be installed here, so the tool under test runs against this
//! simulator instead. It is an independent implementation written from
//! `reference/apiserver-semantics.md` and the upstream Kubernetes source
//! (each module names its sources); nothing here uses the `irsa_agent` crate.
//!
//! One [`Cluster`] simulates one node's control plane on one sysroot:
//! - a **simulated kube-apiserver** (`apiserver.rs`, `startup.rs`): every start
//!   reads the argv the distribution would give kube-apiserver
//!   (`support::effective::apiserver_args`), applies kube-apiserver's
//!   service-account rules (pflag, issuer checks, key files read like client-go
//!   `keyutil`, signing key, static-pod mounts) and either refuses to start
//!   (nothing listens on the port: connections are refused) or serves HTTPS on
//!   `127.0.0.1:<port>` (the same port for the cluster's life): `/readyz` (500,
//!   then 200 after `startup_delay`), TokenRequest, TokenReview, discovery;
//!   tokens are real JWS signed with the node's signing key (`jwt.rs`, `keys.rs`);
//! - the distribution's **admin kubeconfig**, overwritten in the sysroot to
//!   point at the simulator, with a client certificate (O=system:masters) or,
//!   for MicroK8s, a bearer token (`tls.rs`);
//! - for systemd distributions, a private **dbus-daemon** (`dbus.rs`) with a
//!   **fake systemd** on it (`systemd.rs`): `RestartUnit` of the distribution's
//!   unit restarts the simulated apiserver and reports `JobRemoved`;
//! - for static-pod distributions, a **fake kubelet** (`kubelet.rs`) that
//!   restarts the apiserver when the manifest changes and runs a stand-in
//!   process named `kube-apiserver` per start, visible in `/proc`.
//!
//! Service accounts: `default` exists in every namespace; `kube-system/coredns`
//! and `kube-system/kube-proxy` are pre-created; tests can add more with
//! [`Cluster::create_service_account`]. Each has a uid that is stable for the
//! cluster's life. No pods, secrets or nodes exist.
//!
//! Threads: the simulator runs on its own tokio runtime inside the test
//! process; the public methods block (call them from plain `#[test]`s, not
//! from inside another async runtime). Everything temporary lives under a
//! per-cluster temp dir; no global state, no fixed ports.

pub mod apiserver;
pub mod dbus;
pub mod jwt;
pub mod keys;
pub mod kubelet;
pub mod startup;
pub mod systemd;
pub mod tls;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use apiserver::Auth;
use systemd::UnitState;
use tls::{AdminAuth, KubeconfigNames, Pki};

use super::effective::SaSettings;

// ---------------------------------------------------------------------------
// Distribution profiles (the tool's distros/*.toml describe the same facts)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub enum RestartKind {
    /// A systemd unit restarts the apiserver.
    Systemd { unit: &'static str },
    /// The kubelet restarts the static pod when this manifest (sysroot-relative) changes.
    StaticPod { manifest: &'static str },
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: &'static str,
    pub restart: RestartKind,
    /// Admin kubeconfig, node path.
    pub kubeconfig: &'static str,
    pub names: KubeconfigNames,
    pub admin_auth: AdminAuth,
}

const MANIFEST: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";

pub fn profile(distro: &str) -> Option<Profile> {
    let names = |cluster, context, user| KubeconfigNames {
        cluster,
        context,
        user,
    };
    Some(match distro {
        "microk8s" => Profile {
            name: "microk8s",
            restart: RestartKind::Systemd {
                unit: "snap.microk8s.daemon-kubelite.service",
            },
            kubeconfig: "/var/snap/microk8s/current/credentials/client.config",
            names: names("microk8s-cluster", "microk8s", "admin"),
            admin_auth: AdminAuth::Token,
        },
        "kubeadm" => Profile {
            name: "kubeadm",
            restart: RestartKind::StaticPod { manifest: MANIFEST },
            kubeconfig: "/etc/kubernetes/admin.conf",
            names: names(
                "kubernetes",
                "kubernetes-admin@kubernetes",
                "kubernetes-admin",
            ),
            admin_auth: AdminAuth::ClientCert,
        },
        "minikube" => Profile {
            name: "minikube",
            restart: RestartKind::StaticPod { manifest: MANIFEST },
            kubeconfig: "/var/lib/minikube/kubeconfig",
            names: names("mk", "mk", "mk"),
            admin_auth: AdminAuth::ClientCert,
        },
        "k3s" => Profile {
            name: "k3s",
            restart: RestartKind::Systemd {
                unit: "k3s.service",
            },
            kubeconfig: "/etc/rancher/k3s/k3s.yaml",
            names: names("default", "default", "default"),
            admin_auth: AdminAuth::ClientCert,
        },
        "rke2" => Profile {
            name: "rke2",
            restart: RestartKind::Systemd {
                unit: "rke2-server.service",
            },
            kubeconfig: "/etc/rancher/rke2/rke2.yaml",
            names: names("default", "default", "default"),
            admin_auth: AdminAuth::ClientCert,
        },
        "k0s" => Profile {
            name: "k0s",
            restart: RestartKind::Systemd {
                unit: "k0scontroller.service",
            },
            kubeconfig: "/var/lib/k0s/pki/admin.conf",
            names: names("local", "Default", "admin"),
            admin_auth: AdminAuth::ClientCert,
        },
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// How the simulated control plane behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time between an accepted start (listener up) and `/readyz` = 200.
    pub startup_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            startup_delay: Duration::from_millis(300),
        }
    }
}

/// Something wrong to inject into the simulated control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next accepted start serves tokens whose `iss` is this value instead
    /// of the first issuer (a verify failure). One-shot: the start after it is
    /// normal. (A refused start does not use it up.)
    WrongIssuerOnNextStart(String),
    /// Node paths starting with this prefix are unreadable to the apiserver
    /// (models permissions/SELinux/snap confinement; CI runs as root so file
    /// modes can't). A start whose key/signing-key file matches refuses to
    /// start ("permission denied"). Persistent until cleared.
    UnreadablePrefix(String),
    /// The next `RestartUnit` call on the fake systemd is never answered (a
    /// wedged PID 1): no reply, no job, no restart. One-shot: the call
    /// after it is served normally.
    RestartUnitNeverAnswers,
}

/// A snapshot of the simulated control plane.
#[derive(Debug, Clone)]
pub struct Status {
    /// An accepted start is serving (the port listens).
    pub running: bool,
    /// Number of starts attempted.
    pub generation: u64,
    /// The argv of the last start attempt (empty if it could not be read).
    pub args: Vec<String>,
    /// Its service-account settings, when the flags parse.
    pub settings: Option<SaSettings>,
    /// Why the last start was refused (`None` after an accepted start).
    pub last_start_error: Option<String>,
    /// When the running apiserver became ready (`None` until then).
    pub ready_at: Option<Instant>,
    /// The first `/readyz` (or `/healthz`) 200 served by this generation.
    pub first_ready_served_at: Option<Instant>,
    /// Static pods: pid of the running stand-in `kube-apiserver` process.
    pub pid: Option<u32>,
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

pub struct Shared {
    pub profile: Profile,
    pub root: PathBuf,
    pub port: u16,
    pub pki: Pki,
    pub server_tls: Arc<rustls::ServerConfig>,
    pub opts: Options,
    /// Static pods: the stand-in script.
    pub stand_in_script: Option<PathBuf>,
    /// Makes service-account uids stable for the cluster's life.
    pub seed: [u8; 16],
    /// Service accounts besides `default` (which exists in every namespace).
    pub accounts: Mutex<BTreeSet<(String, String)>>,
    pub state: Mutex<State>,
    /// Serializes stops/starts (kubelet thread, D-Bus restarts, Drop).
    pub lifecycle: tokio::sync::Mutex<()>,
}

pub struct State {
    pub generation: u64,
    pub args: Vec<String>,
    pub settings: Option<SaSettings>,
    pub last_start_error: Option<String>,
    pub instance: Option<Arc<apiserver::Instance>>,
    pub server: Option<tokio::task::JoinHandle<()>>,
    pub stand_in: Option<tokio::process::Child>,
    pub stand_in_pid: Option<u32>,
    pub first_ready_served_at: Option<Instant>,
    pub wrong_issuer: Option<String>,
    pub unreadable: Vec<String>,
    /// [`Fault::RestartUnitNeverAnswers`] is armed.
    pub restart_unit_hangs: bool,
    pub strict_signing_key_check: bool,
    pub restarts: Vec<(String, String)>,
    pub subscribe_calls: u64,
    pub unit_state: UnitState,
    /// The cluster is being dropped: no more starts.
    pub closed: bool,
}

pub fn account_exists(accounts: &BTreeSet<(String, String)>, ns: &str, name: &str) -> bool {
    !ns.is_empty() && (name == "default" || accounts.contains(&(ns.to_string(), name.to_string())))
}

/// A uuid-shaped uid derived from the cluster seed, namespace and name.
pub fn account_uid(seed: &[u8; 16], ns: &str, name: &str) -> String {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(ns.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    jwt::uuid_string(&b)
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// One simulated control plane for one sysroot. Dropping it stops everything
/// (stand-in processes, the HTTPS server, the fake systemd, dbus-daemon).
pub struct Cluster {
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
    kubelet: Option<kubelet::Kubelet>,
    systemd_conn: Option<zbus::Connection>,
    dbus: Option<dbus::DbusDaemon>,
    /// Keeps the port bound (not listening) while the apiserver is down, so
    /// nothing else takes it and connections are refused.
    _port_reservation: Option<tokio::net::TcpSocket>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Start a simulated control plane for `distro` on the sysroot `root` with
    /// default options. Returns once the apiserver is ready, or `Err` with the
    /// reason it refused to start.
    pub fn start(distro: &str, root: &Path) -> Result<Cluster> {
        Self::start_with(distro, root, Options::default())
    }

    pub fn start_with(distro: &str, root: &Path, opts: Options) -> Result<Cluster> {
        let profile = profile(distro).ok_or_else(|| anyhow!("unknown distro {distro:?}"))?;
        let dir = tempfile::Builder::new()
            .prefix("irsa-sim-")
            .tempdir()
            .context("creating the simulator's temp dir")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("irsa-sim")
            .enable_all()
            .build()
            .context("starting the simulator's tokio runtime")?;

        let reservation = {
            let _guard = rt.enter();
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.set_reuseaddr(true)?;
            sock.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
            sock
        };
        let port = reservation.local_addr()?.port();

        let pki = Pki::generate()?;
        let server_tls = pki.server_config()?;
        pki.write_kubeconfig(
            &root.join(profile.kubeconfig.trim_start_matches('/')),
            &format!("https://127.0.0.1:{port}"),
            profile.names,
            profile.admin_auth,
        )?;
        let stand_in_script = match profile.restart {
            RestartKind::StaticPod { .. } => Some(kubelet::write_stand_in(dir.path())?),
            RestartKind::Systemd { .. } => None,
        };
        let mut seed = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let accounts: BTreeSet<(String, String)> =
            [("kube-system", "coredns"), ("kube-system", "kube-proxy")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();

        let shared = Arc::new(Shared {
            profile: profile.clone(),
            root: root.to_path_buf(),
            port,
            pki,
            server_tls,
            opts: opts.clone(),
            stand_in_script,
            seed,
            accounts: Mutex::new(accounts),
            state: Mutex::new(State {
                generation: 0,
                args: Vec::new(),
                settings: None,
                last_start_error: None,
                instance: None,
                server: None,
                stand_in: None,
                stand_in_pid: None,
                first_ready_served_at: None,
                wrong_issuer: None,
                unreadable: Vec::new(),
                restart_unit_hangs: false,
                strict_signing_key_check: true,
                restarts: Vec::new(),
                subscribe_calls: 0,
                unit_state: UnitState::Inactive,
                closed: false,
            }),
            lifecycle: tokio::sync::Mutex::new(()),
        });

        let mut cluster = Cluster {
            shared: shared.clone(),
            rt: Some(rt),
            kubelet: None,
            systemd_conn: None,
            dbus: None,
            _port_reservation: Some(reservation),
            dir,
        };

        if let RestartKind::Systemd { unit } = profile.restart {
            let daemon = dbus::DbusDaemon::spawn(cluster.dir.path())?;
            let address = daemon.address.clone();
            cluster.dbus = Some(daemon);
            let conn = cluster
                .rt()
                .block_on(systemd::serve(shared.clone(), &address, unit))
                .context("serving the fake systemd on the private bus")?;
            cluster.systemd_conn = Some(conn);
        }

        let seen = match profile.restart {
            RestartKind::StaticPod { manifest } => std::fs::read(root.join(manifest)).ok(),
            RestartKind::Systemd { .. } => None,
        };
        let first = cluster.rt().block_on(async {
            let _life = shared.lifecycle.lock().await;
            apiserver::start(&shared).await
        });
        if let Err(e) = first {
            bail!("the simulated {distro} apiserver refused to start: {e}");
        }
        if let RestartKind::StaticPod { manifest } = profile.restart {
            cluster.kubelet = Some(kubelet::Kubelet::spawn(
                shared.clone(),
                cluster.rt().handle().clone(),
                root.join(manifest),
                seen,
            ));
        }
        cluster.wait_ready(opts.startup_delay + Duration::from_secs(10))?;
        Ok(cluster)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the simulator runtime is alive")
    }

    /// Environment for the tool process: `DBUS_SYSTEM_BUS_ADDRESS` of the
    /// private bus for systemd distributions, nothing for static pods.
    pub fn env(&self) -> Vec<(String, String)> {
        match &self.dbus {
            Some(d) => vec![("DBUS_SYSTEM_BUS_ADDRESS".into(), d.address.clone())],
            None => Vec::new(),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.shared.port)
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// The simulator CA (PEM) that signed the serving certificate.
    pub fn ca_pem(&self) -> String {
        self.shared.pki.ca_pem.clone()
    }

    pub fn distro(&self) -> &'static str {
        self.shared.profile.name
    }

    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// The admin kubeconfig the simulator wrote (full path in the sysroot).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.shared
            .root
            .join(self.shared.profile.kubeconfig.trim_start_matches('/'))
    }

    /// The private bus address (systemd distributions).
    pub fn bus_address(&self) -> Option<String> {
        self.dbus.as_ref().map(|d| d.address.clone())
    }

    /// The systemd unit that restarts the apiserver (systemd distributions).
    pub fn unit(&self) -> Option<&'static str> {
        match self.shared.profile.restart {
            RestartKind::Systemd { unit } => Some(unit),
            RestartKind::StaticPod { .. } => None,
        }
    }

    /// Static pods: the stand-in script (the `kube-apiserver` processes run it).
    pub fn stand_in_path(&self) -> Option<PathBuf> {
        self.shared.stand_in_script.clone()
    }

    /// The simulator's temp dir (bus socket, stand-in script).
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stop the fake kubelet: from now on a changed manifest restarts nothing
    /// (a kubelet that is down or slow).
    pub fn stop_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            k.stop();
        }
    }

    pub fn status(&self) -> Status {
        let st = self.shared.state.lock().unwrap();
        let now = Instant::now();
        Status {
            running: st.instance.is_some(),
            generation: st.generation,
            args: st.args.clone(),
            settings: st.settings.clone(),
            last_start_error: st.last_start_error.clone(),
            ready_at: st
                .instance
                .as_ref()
                .map(|i| i.ready_at)
                .filter(|t| *t <= now),
            first_ready_served_at: st.first_ready_served_at,
            pid: st.stand_in_pid,
        }
    }

    pub fn inject(&self, fault: Fault) {
        let mut st = self.shared.state.lock().unwrap();
        match fault {
            Fault::WrongIssuerOnNextStart(iss) => st.wrong_issuer = Some(iss),
            Fault::UnreadablePrefix(p) => st.unreadable.push(p),
            Fault::RestartUnitNeverAnswers => st.restart_unit_hangs = true,
        }
    }

    pub fn clear_faults(&self) {
        let mut st = self.shared.state.lock().unwrap();
        st.wrong_issuer = None;
        st.unreadable.clear();
        st.restart_unit_hangs = false;
    }

    /// Whether a signing key whose public half is in no key file refuses the
    /// start (default `true`, the simulator's own check). `false` behaves like
    /// upstream: the apiserver starts and its new tokens fail TokenReview.
    pub fn set_strict_signing_key_check(&self, strict: bool) {
        self.shared.state.lock().unwrap().strict_signing_key_check = strict;
    }

    /// `(unit, mode)` of every RestartUnit received over D-Bus, in order.
    pub fn restarts(&self) -> Vec<(String, String)> {
        self.shared.state.lock().unwrap().restarts.clone()
    }

    /// How many times `Subscribe()` was called on the fake systemd.
    pub fn subscribe_calls(&self) -> u64 {
        self.shared.state.lock().unwrap().subscribe_calls
    }

    /// Stop and start the apiserver from the current files, as a unit restart
    /// or a kubelet pod restart would (without going through D-Bus).
    pub fn restart(&self) -> Result<()> {
        self.rt()
            .block_on(apiserver::restart(&self.shared))
            .map_err(|e| anyhow!("the simulated apiserver refused to start: {e}"))
    }

    /// Wait until an accepted start is ready (does not count as a `/readyz`
    /// served). `Err` on timeout, with the last refusal reason if any.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let st = self.shared.state.lock().unwrap();
                if st
                    .instance
                    .as_ref()
                    .is_some_and(|i| Instant::now() >= i.ready_at)
                {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the simulated apiserver is not ready after {timeout:?} (generation {}, last start error: {})",
                        st.generation,
                        st.last_start_error.as_deref().unwrap_or("none")
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One HTTPS request to the simulated apiserver: `(status, body)`.
    pub fn call(
        &self,
        auth: Auth,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String)> {
        self.rt()
            .block_on(apiserver::request(&self.shared, &auth, method, path, body))
    }

    /// A TokenRequest through the simulator's HTTPS API, with the admin
    /// credential (like the kubelet gets a token for a pod). `audiences`
    /// empty: the apiserver's api-audiences.
    pub fn token(&self, namespace: &str, name: &str, audiences: &[&str]) -> Result<String> {
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": { "audiences": audiences },
        });
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
        let (code, text) = self.call(Auth::Admin, "POST", &path, Some(&body))?;
        if code != 201 {
            bail!("TokenRequest for {namespace}/{name} answered {code}: {text}");
        }
        let v: Value = serde_json::from_str(&text)?;
        v.pointer("/status/token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("TokenRequest answer without a token: {text}"))
    }

    /// A TokenReview through the HTTPS API (the api-audiences): authenticated?
    pub fn review(&self, token: &str) -> Result<bool> {
        Ok(self.review_full(token, &[])?["status"]["authenticated"]
            .as_bool()
            .unwrap_or(false))
    }

    /// A TokenReview with `spec.audiences`; the whole answer.
    pub fn review_full(&self, token: &str, audiences: &[&str]) -> Result<Value> {
        let mut spec = json!({ "token": token });
        if !audiences.is_empty() {
            spec["audiences"] = json!(audiences);
        }
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": spec,
        });
        let (code, text) = self.call(
            Auth::Admin,
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(&body),
        )?;
        if code != 201 {
            bail!("TokenReview answered {code}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Add a service account (`default` exists in every namespace already).
    pub fn create_service_account(&self, namespace: &str, name: &str) {
        self.shared
            .accounts
            .lock()
            .unwrap()
            .insert((namespace.to_string(), name.to_string()));
    }

    /// The uid a service account's tokens carry.
    pub fn service_account_uid(&self, namespace: &str, name: &str) -> String {
        account_uid(&self.shared.seed, namespace, name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            k.stop();
        }
        if let Some(rt) = self.rt.take() {
            let shared = self.shared.clone();
            let conn = self.systemd_conn.take();
            rt.block_on(async move {
                let _life = shared.lifecycle.lock().await;
                shared.state.lock().unwrap().closed = true;
                apiserver::stop(&shared).await;
                drop(conn);
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        self.dbus.take();
    }
}
