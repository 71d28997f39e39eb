//! The apiserver's API, through the admin kubeconfig (kube-rs): readiness,
//! TokenRequest and TokenReview. Nothing here decides anything.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::Sysroot;

/// The longest one request to the apiserver may take, whatever the caller's
/// deadline (which [`crate::live::Live::block_on`] adds): a connection that
/// accepts and never answers must not hold the run.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `call`, or an error after [`CALL_TIMEOUT`].
async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {}s", CALL_TIMEOUT.as_secs()))
}

/// A client for the node's own apiserver.
#[derive(Clone)]
pub struct ApiServer {
    client: Client,
    /// The server URL from the kubeconfig, for messages.
    pub url: String,
}

/// What TokenReview said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub authenticated: bool,
    pub username: Option<String>,
    /// The apiserver's reason when not authenticated.
    pub error: Option<String>,
}

impl ApiServer {
    /// Connect with the kubeconfig at node path `kubeconfig`. File references in
    /// it (certificate-authority, client-certificate, client-key, tokenFile) are
    /// node paths too and are resolved under the root.
    pub async fn connect(root: &Sysroot, kubeconfig: &str) -> Result<Self> {
        let text = root.read_optional(kubeconfig)?.ok_or_else(|| {
            anyhow!(
                "the admin kubeconfig {kubeconfig} does not exist; irsa-agent needs it to check the apiserver's \
                 health and verify a token (use --no-restart to only write the files)"
            )
        })?;
        let mut kc =
            Kubeconfig::from_yaml(&text).with_context(|| format!("reading {kubeconfig}"))?;
        super::kubeconfig::check(root, kubeconfig, &kc)?;
        let dir = kubeconfig.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
        let resolve = |p: &mut Option<String>| -> Result<()> {
            if let Some(v) = p.as_mut() {
                let node_path = if v.starts_with('/') {
                    v.clone()
                } else {
                    format!("{dir}/{v}")
                };
                *v = root
                    .host_path(&node_path)
                    .with_context(|| format!("reading {kubeconfig}"))?
                    .to_string_lossy()
                    .into_owned();
            }
            Ok(())
        };
        for c in kc.clusters.iter_mut().filter_map(|n| n.cluster.as_mut()) {
            resolve(&mut c.certificate_authority)?;
        }
        for a in kc
            .auth_infos
            .iter_mut()
            .filter_map(|n| n.auth_info.as_mut())
        {
            resolve(&mut a.client_certificate)?;
            resolve(&mut a.client_key)?;
            resolve(&mut a.token_file)?;
        }
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("using the admin kubeconfig {kubeconfig}"))?;
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(10));
        config.write_timeout = Some(Duration::from_secs(10));
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .with_context(|| format!("building an apiserver client from {kubeconfig}"))?;
        Ok(Self { client, url })
    }

    /// `GET /readyz`: Ok when the apiserver says it is ready, otherwise why not.
    pub async fn ready(&self) -> std::result::Result<(), String> {
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        match bounded("GET /readyz", self.client.request_text(req)).await {
            Ok(Ok(body)) if body.trim() == "ok" => Ok(()),
            Ok(Ok(body)) => Err(format!("/readyz answered {:?}", body.trim())),
            Ok(Err(e)) => Err(describe(&e)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A TokenRequest for `namespace/name`. `audiences` empty: the apiserver's own.
    pub async fn token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[String],
        expiration: Duration,
    ) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.to_vec(),
                expiration_seconds: Some(expiration.as_secs() as i64),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = bounded(
            "TokenRequest",
            api.create_token_request(name, &PostParams::default(), &request),
        )
        .await
        .and_then(|r| r.map_err(|e| anyhow!(describe(&e))))
        .with_context(|| format!("requesting a token for service account {namespace}/{name}"))?;
        answer
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("the apiserver answered the TokenRequest for {namespace}/{name} without a token"))
    }

    /// A TokenReview: does the apiserver accept `token` (for `audiences`, or its own)?
    pub async fn review(&self, token: &str, audiences: &[String]) -> Result<Review> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
            },
            ..Default::default()
        };
        let answer = bounded("TokenReview", api.create(&PostParams::default(), &review))
            .await
            .and_then(|r| r.map_err(|e| anyhow!(describe(&e))))
            .context("sending a TokenReview")?;
        let status = answer.status.unwrap_or_default();
        Ok(Review {
            authenticated: status.authenticated.unwrap_or(false),
            username: status.user.and_then(|u| u.username),
            error: status.error.filter(|e| !e.is_empty()),
        })
    }
}

/// One line for a kube-rs error: the apiserver's message when it sent one,
/// otherwise the whole chain (connection refused, TLS, timeouts).
fn describe(e: &kube::Error) -> String {
    if let kube::Error::Api(s) = e {
        return format!(
            "the apiserver answered {} {}: {}",
            s.code, s.reason, s.message
        );
    }
    super::error_line(e)
}
