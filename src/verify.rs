//! Proof that the apiserver runs the configuration: a fresh token from
//! TokenRequest, decoded and checked (`iss`, `aud`, header `kid`, signature
//! with the installed public key), then accepted by TokenReview. With
//! `--public`, the published discovery document and JWKS are fetched over
//! HTTPS and the token is validated with them the way AWS STS does.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::{GlobalOpts, ServiceAccountRef, VerifyOpts};
use crate::flags::SaState;
use crate::issuer::differ_only_by_trailing_slash;
use crate::keycheck;
use crate::keys::claims::{self, Clock};
use crate::keys::{PrivateKey, PublicKey};
use crate::live::{self, Live};
use crate::node::{self, Node};
use crate::output::Outcome;
use crate::system::https;

/// Lifetime asked for verification tokens: the shortest the apiserver allows.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// Lifetime of the token `apply` gets before the change and reviews after
/// it: it must outlive the rest of the run, whose budget is `--timeout`
/// (`left`, what is left of it), plus a margin; never below the minimum of
/// TokenRequest ([`TOKEN_LIFETIME`]).
pub fn old_token_lifetime(left: Duration) -> Duration {
    let wanted = left + Duration::from_secs(120);
    // Whole minutes, as an operator reads them in an audit log.
    TOKEN_LIFETIME.max(Duration::from_secs(wanted.as_secs().div_ceil(60) * 60))
}

/// How long a cloud provider waits for the discovery documents (AWS STS gives
/// up after about 5 s).
const PUBLIC_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What a fresh token must show.
#[derive(Debug, Clone)]
pub struct Expect {
    pub issuer: String,
    pub audience: String,
    /// The public half of the configured signing key.
    pub signing: PublicKey,
    /// Every key in the configured key files.
    pub accepted: Vec<PublicKey>,
}

/// The decoded claims of a token that passed; printed instead of the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub iss: String,
    pub aud: Vec<String>,
    pub kid: String,
    pub sub: String,
    pub alg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

/// A JWS split into its parts.
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jwt {
    pub fn decode(token: &str) -> Result<Self> {
        let parts: Vec<&str> = token.split('.').collect();
        let [h, c, s] = parts[..] else {
            bail!(
                "the token is not a JWS (it has {} parts, not 3)",
                parts.len()
            );
        };
        let part = |name: &str, b64: &str| -> Result<Value> {
            let bytes = URL_SAFE_NO_PAD
                .decode(b64)
                .with_context(|| format!("the token's {name} is not base64url"))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("the token's {name} is not JSON"))
        };
        Ok(Self {
            header: part("header", h)?,
            claims: part("claims", c)?,
            signing_input: format!("{h}.{c}"),
            signature: URL_SAFE_NO_PAD
                .decode(s)
                .context("the token's signature is not base64url")?,
        })
    }

    fn header_str(&self, name: &str) -> Option<&str> {
        self.header[name].as_str()
    }

    /// `aud` may be a string or a list.
    fn audiences(&self) -> Vec<String> {
        match &self.claims["aud"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Verify the signature with `key` (the algorithm must be the key's).
    pub fn verify_with(&self, key: &PublicKey) -> Result<()> {
        let alg = self.header_str("alg").unwrap_or("");
        key.verify_jws(alg, self.signing_input.as_bytes(), &self.signature)
    }

    /// The claims; an `iss` or `sub` that is missing or not a string is
    /// refused as malformed (not read as "").
    fn verified(&self) -> Result<Verified> {
        let s = |name: &str| -> Result<String> {
            match &self.claims[name] {
                Value::String(s) => Ok(s.clone()),
                Value::Null => bail!("the token is malformed: it has no {name}"),
                other => bail!("the token is malformed: its {name} is {other}, not a string"),
            }
        };
        Ok(Verified {
            iss: s("iss")?,
            aud: self.audiences(),
            kid: self.header_str("kid").unwrap_or_default().to_string(),
            sub: s("sub")?,
            alg: self.header_str("alg").unwrap_or_default().to_string(),
            exp: self.claims["exp"].as_i64(),
        })
    }
}

/// Check a token against what the configuration promises. Pure.
pub fn check(token: &str, expect: &Expect) -> Result<Verified> {
    let jwt = Jwt::decode(token)?;
    let v = jwt.verified()?;
    if v.iss != expect.issuer {
        bail!(
            "the token's iss is {:?}, expected {:?}: the apiserver does not sign with the new issuer \
             (is it running the new flags?)",
            v.iss,
            expect.issuer
        );
    }
    if !v.aud.contains(&expect.audience) {
        bail!(
            "the token's aud {:?} does not contain {:?}: the apiserver did not issue it for that audience",
            v.aud,
            expect.audience
        );
    }
    let want = expect.signing.kid();
    if v.kid != want {
        bail!(
            "the token's header kid is {:?}, but the configured signing key's kid is {want:?}: \
             the apiserver signs with another key (is it running the new flags?)",
            v.kid
        );
    }
    let installed = expect
        .accepted
        .iter()
        .find(|k| k.kid() == v.kid)
        .ok_or_else(|| anyhow!("no installed key file holds the key with kid {}", v.kid))?;
    jwt.verify_with(installed)
        .context("the token's signature does not verify with the installed public key")?;
    Ok(v)
}

/// What the token is checked against, from the node's settings `state`.
pub fn expect_for(node: &Node, state: &SaState, issuer: &str, audience: &str) -> Result<Expect> {
    let sk = state.signing_key_file.as_deref().ok_or_else(|| {
        anyhow!(
            "no --service-account-signing-key-file is configured: nothing to verify tokens against"
        )
    })?;
    let bytes = node
        .root
        .read_bytes(sk)
        .with_context(|| format!("reading the signing key {sk}"))?;
    let signing = PrivateKey::parse(&bytes, Path::new(sk))?.public_key();
    let accepted = keycheck::check(&node.root, node.profile(), state)?.accepted;
    Ok(Expect {
        issuer: issuer.to_string(),
        audience: audience.to_string(),
        signing,
        accepted,
    })
}

/// Ask for a fresh token, check it, and have the apiserver authenticate it.
/// The token is returned for `--public`; it is never printed. `hint` is added
/// to a failed check of the token's claims (not to a failed request).
pub fn fresh(
    live: &Live,
    sa: &ServiceAccountRef,
    expect: &Expect,
    hint: Option<&'static str>,
) -> Result<(String, Verified)> {
    let audiences = [expect.audience.clone()];
    let token =
        live.block_on(
            live.api
                .token(&sa.namespace, &sa.name, &audiences, TOKEN_LIFETIME),
        )?;
    let verified = match (check(&token, expect), hint) {
        (Err(e), Some(h)) => return Err(e.context(h)),
        (r, _) => r?,
    };
    let review = live.block_on(live.api.review(&token, &audiences))?;
    if !review.authenticated {
        bail!(
            "the apiserver does not authenticate the token it just issued ({}): is the signing key's public half in a key file?",
            review.error.as_deref().unwrap_or("no reason given")
        );
    }
    Ok((token, verified))
}

/// The published documents, where they were found.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub discovery_url: String,
    pub jwks_uri: String,
    /// This node's clock minus the discovery host's (its `Date` header), in
    /// seconds; None when the host sent no usable Date.
    pub node_clock_skew_secs: Option<i64>,
    /// Set when that skew is beyond the leeway cloud providers allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_warning: Option<String>,
}

/// Fetch `<iss>/.well-known/openid-configuration` and its `jwks_uri` over
/// HTTPS and validate `token` with them as AWS STS does: the issuer, the
/// published key (its kid, use and alg must agree with its material), the
/// signature, and `exp`/`nbf`/`iat` by the discovery host's clock (its
/// `Date` header), which tells a skewed node clock.
pub async fn check_public(token: &str, ca: Option<&[u8]>) -> Result<Published> {
    let jwt = Jwt::decode(token)?;
    let v = jwt.verified()?;
    let times = claims::times(&jwt.claims)?;
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        v.iss.trim_end_matches('/')
    );
    let (doc, outside) = fetch_json(&discovery_url, ca, &v.iss).await?;
    let clock = Clock::new(SystemTime::now(), outside, &discovery_url);
    let published_iss = doc["issuer"]
        .as_str()
        .ok_or_else(|| anyhow!("{discovery_url} has no \"issuer\""))?;
    if published_iss != v.iss {
        if differ_only_by_trailing_slash(published_iss, &v.iss) {
            bail!(
                "{discovery_url} says issuer {published_iss:?} but tokens carry iss {:?}: they differ by a trailing \
                 slash, and STS compares them as exact strings. Publish (and register in IAM) exactly the apiserver's issuer",
                v.iss
            );
        }
        bail!(
            "{discovery_url} says issuer {published_iss:?} but tokens carry iss {:?}: publish the documents of this \
             cluster's issuer (irsa-agent discovery --issuer {})",
            v.iss,
            v.iss
        );
    }
    let jwks_uri = doc["jwks_uri"]
        .as_str()
        .ok_or_else(|| anyhow!("{discovery_url} has no \"jwks_uri\""))?
        .to_string();
    let (jwks, _) = fetch_json(&jwks_uri, ca, &v.iss).await?;
    let keys = jwks["keys"]
        .as_array()
        .ok_or_else(|| anyhow!("{jwks_uri} is not a JWKS: it has no \"keys\" list"))?;
    let Some(jwk) = keys.iter().find(|k| k["kid"].as_str() == Some(&v.kid)) else {
        let kids: Vec<String> = keys
            .iter()
            .map(|k| {
                k["kid"]
                    .as_str()
                    .map_or("(no kid)".into(), |s| format!("{s:?}"))
            })
            .collect();
        bail!(
            "the JWKS at {jwks_uri} has no key with kid {:?} (it has {}): STS would fail with \"Couldn't retrieve \
             verification key\". Publish the current JWKS (irsa-agent discovery)",
            v.kid,
            if kids.is_empty() { "no keys".to_string() } else { kids.join(", ") }
        );
    };
    let key = PublicKey::from_published_jwk(jwk)
        .with_context(|| format!("the key with kid {:?} in {jwks_uri}", v.kid))?;
    jwt.verify_with(&key).with_context(|| {
        format!(
            "the key published with kid {:?} at {jwks_uri} does not verify the token: the published key is not \
             the signing key",
            v.kid
        )
    })?;
    claims::check_times(&times, &clock)
        .context("the published documents verify the token, but STS would refuse it")?;
    Ok(Published {
        discovery_url,
        jwks_uri,
        node_clock_skew_secs: clock.node_skew,
        clock_warning: clock.skew_note(),
    })
}

/// Check a token's claims against what AWS IAM holds for the provider
/// (`Url` with or without `https://`, `ClientIDList`), the two checks behind
/// STS's "No OpenIDConnect provider found" and "Incorrect token audience".
pub fn check_aws_provider(provider: &Value, v: &Verified, name: &str) -> Result<()> {
    let url = provider["Url"]
        .as_str()
        .ok_or_else(|| anyhow!("{name} has no \"Url\" string: is it an IAM OIDC provider?"))?;
    let registered = url.strip_prefix("https://").unwrap_or(url);
    let iss = v.iss.strip_prefix("https://").unwrap_or(&v.iss);
    if registered != iss {
        if differ_only_by_trailing_slash(registered, iss) {
            bail!(
                "the IAM provider's Url {url:?} and the token's iss {:?} differ by a trailing slash: STS matches \
                 them exactly (\"No OpenIDConnect provider found\"). Register the issuer exactly as the apiserver has it",
                v.iss
            );
        }
        bail!(
            "the IAM provider's Url {url:?} is not the token's iss {:?}: STS would find no provider for these tokens",
            v.iss
        );
    }
    let ids: Vec<&str> = provider["ClientIDList"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !v.aud.iter().any(|a| ids.contains(&a.as_str())) {
        bail!(
            "Incorrect token audience: the token's aud {:?} is in none of the IAM provider's ClientIDList {ids:?}; \
             add the audience as a client ID (aws iam add-client-id-to-open-id-connect-provider)",
            v.aud
        );
    }
    Ok(())
}

/// GET a public JSON document, with the server's `Date`; each failure worded
/// the way users meet it.
async fn fetch_json(
    url: &str,
    ca: Option<&[u8]>,
    issuer: &str,
) -> Result<(Value, Option<SystemTime>)> {
    let res = https::get(url, ca, PUBLIC_FETCH_TIMEOUT).await.map_err(|e| {
        anyhow!(
            "{url} is not reachable ({e:#}): AWS STS, GCP and Azure fetch it from the internet over HTTPS with a \
             publicly trusted certificate (pass --ca-file to test a private CA)"
        )
    })?;
    match res.status {
        200 => {}
        401 | 403 => bail!(
            "{url} answered {}: the document is not public. Cloud providers fetch it anonymously; on S3, allow \
             public read of these objects (new buckets block public access)",
            res.status
        ),
        404 => bail!(
            "{url} answered 404: nothing is published there. Upload the files `irsa-agent discovery --issuer {issuer}` \
             writes, at exactly these paths"
        ),
        301 | 302 | 303 | 307 | 308 => bail!(
            "{url} redirects ({}) to {}: serve the document at this URL itself",
            res.status,
            res.location.as_deref().unwrap_or("(no Location)")
        ),
        other => bail!("{url} answered HTTP {other}"),
    }
    let doc = serde_json::from_slice(&res.body).with_context(|| format!("{url} is not JSON"))?;
    Ok((doc, res.date))
}

/// `irsa-agent verify`.
pub fn run(global: &GlobalOpts, opts: &VerifyOpts) -> Result<Outcome> {
    crate::issuer::check_audience(&opts.audience)?;
    let ca = opts
        .ca_file
        .as_ref()
        .map(|p| fs_err::read(p).map_err(|e| anyhow!("--ca-file {}: {e}", p.display())))
        .transpose()?;
    let root = node::sysroot(global)?;
    let node = node::inspect(root, global.distro.as_deref())?;
    let state = node.effective.state();
    let issuer = match &opts.issuer {
        Some(i) => i.clone(),
        None => state.issuers.first().cloned().ok_or_else(|| {
            anyhow!(
                "no --service-account-issuer is configured in {}",
                node.profile().config
            )
        })?,
    };
    let expect = expect_for(&node, &state, &issuer, &opts.audience)?;
    let live = Live::connect(&node, opts.wait.duration(), live::spinner_wanted(global))?;
    live.wait_ready("before verifying")?;
    let (token, verified) = fresh(&live, &opts.service_account, &expect, None)?;
    if let Some(path) = &opts.aws_provider {
        let bytes =
            fs_err::read(path).map_err(|e| anyhow!("--aws-provider {}: {e}", path.display()))?;
        let provider: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("--aws-provider {} is not JSON", path.display()))?;
        let name = format!("--aws-provider {}", path.display());
        check_aws_provider(&provider, &verified, &name)?;
    }
    let published = if opts.public {
        Some(live.block_on(check_public(&token, ca.as_deref()))?)
    } else {
        None
    };
    let mut o = Outcome::new();
    o.set("distro", node.profile().name.clone())
        .set("verified", json!(verified))
        .set("public", json!(published))
        .set("aws_provider_ok", opts.aws_provider.is_some());
    o.line(format!("{}: verified", node.profile().title));
    human_claims(&mut o, &verified);
    if let Some(p) = &published {
        o.line(format!(
            "published:   {} and {} verify the token",
            p.discovery_url, p.jwks_uri
        ));
        if let Some(w) = &p.clock_warning {
            tracing::warn!("{w}");
            o.line(format!("warning:     {w}"));
        }
    }
    if let Some(path) = &opts.aws_provider {
        o.line(format!(
            "aws:         the IAM provider in {} matches the token's iss and audience",
            path.display()
        ));
    }
    Ok(o)
}

/// The decoded claims, for people (never the token itself).
pub fn human_claims(o: &mut Outcome, v: &Verified) {
    o.line(format!("token iss:   {}", v.iss));
    o.line(format!("token aud:   {}", v.aud.join(", ")));
    o.line(format!("token sub:   {}", v.sub));
    o.line(format!("token kid:   {} ({})", v.kid, v.alg));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::KeyType;

    #[test]
    fn the_old_token_outlives_the_whole_run() {
        let secs = |s| old_token_lifetime(Duration::from_secs(s)).as_secs();
        assert_eq!(secs(10), 600, "never below TokenRequest's minimum");
        assert_eq!(secs(120), 600);
        // A run of up to an hour keeps its old token valid until it is checked.
        assert_eq!(secs(3600), 3720);
        assert!(secs(1000) >= 1000 + 120);
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A token as kube-apiserver signs it.
    fn sign(key: &PrivateKey, header: Value, claims: Value) -> String {
        let input = format!("{}.{}", b64(&header), b64(&claims));
        let sig = key.sign_jws(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn setup(kind: KeyType) -> (PrivateKey, Expect) {
        let key = PrivateKey::generate(kind).unwrap();
        let public = key.public_key();
        let expect = Expect {
            issuer: "https://oidc.example.com/c".into(),
            audience: "sts.amazonaws.com".into(),
            signing: public.clone(),
            accepted: vec![public],
        };
        (key, expect)
    }

    fn good(key: &PrivateKey) -> (Value, Value) {
        let p = key.public_key();
        (
            json!({"alg": p.alg(), "kid": p.kid()}),
            json!({"iss": "https://oidc.example.com/c", "aud": ["sts.amazonaws.com"],
                   "sub": "system:serviceaccount:default:default", "exp": 2_000_000_000}),
        )
    }

    #[test]
    fn a_good_token_passes_and_reports_its_claims() {
        for kind in [KeyType::Rsa2048, KeyType::EcP256] {
            let (key, expect) = setup(kind);
            let (h, c) = good(&key);
            let v = check(&sign(&key, h, c), &expect).unwrap();
            assert_eq!(v.iss, expect.issuer);
            assert_eq!(v.aud, ["sts.amazonaws.com"]);
            assert_eq!(v.kid, key.public_key().kid());
            assert_eq!(v.sub, "system:serviceaccount:default:default");
            assert_eq!(v.exp, Some(2_000_000_000));
        }
    }

    #[test]
    fn every_mismatch_is_named() {
        let (key, expect) = setup(KeyType::EcP256);
        let err =
            |h: Value, c: Value| format!("{:#}", check(&sign(&key, h, c), &expect).unwrap_err());

        let (h, mut c) = good(&key);
        c["iss"] = json!("https://kubernetes.default.svc");
        assert!(err(h, c).contains("iss is \"https://kubernetes.default.svc\""));

        let (h, mut c) = good(&key);
        c["aud"] = json!("https://kubernetes.default.svc");
        assert!(err(h, c).contains("does not contain \"sts.amazonaws.com\""));

        let (mut h, c) = good(&key);
        h["kid"] = json!("other");
        assert!(err(h, c).contains("kid is \"other\""));

        // Signed by another key that claims the right kid.
        let other = PrivateKey::generate(KeyType::EcP256).unwrap();
        let (h, c) = good(&key);
        let forged = format!("{:#}", check(&sign(&other, h, c), &expect).unwrap_err());
        assert!(forged.contains("signature does not verify"), "{forged}");

        assert!(format!("{:#}", check("a.b", &expect).unwrap_err()).contains("not a JWS"));
    }

    #[test]
    fn a_non_string_iss_or_sub_is_malformed_not_empty() {
        let (key, expect) = setup(KeyType::EcP256);
        for (claim, value, want) in [
            (
                "iss",
                json!(["https://oidc.example.com/c"]),
                "its iss is [\"https://oidc.example.com/c\"], not a string",
            ),
            ("iss", Value::Null, "it has no iss"),
            ("sub", json!(42), "its sub is 42, not a string"),
            (
                "sub",
                json!({"name": "default"}),
                "its sub is {\"name\":\"default\"}",
            ),
        ] {
            let (h, mut c) = good(&key);
            c[claim] = value;
            let e = format!("{:#}", check(&sign(&key, h, c), &expect).unwrap_err());
            assert!(
                e.starts_with("the token is malformed") && e.contains(want),
                "{claim}: {e}"
            );
        }
    }

    #[test]
    fn the_aws_provider_must_match_iss_and_audience() {
        let v = Verified {
            iss: "https://oidc.example.com/c".into(),
            aud: vec!["sts.amazonaws.com".into()],
            kid: "k".into(),
            sub: "system:serviceaccount:default:default".into(),
            alg: "RS256".into(),
            exp: None,
        };
        // `irsa-agent aws` writes the scheme; `aws iam get-open-id-connect-provider` does not.
        for url in ["https://oidc.example.com/c", "oidc.example.com/c"] {
            let p = json!({"Url": url, "ClientIDList": ["sts.amazonaws.com"]});
            check_aws_provider(&p, &v, "p").unwrap();
        }
        let err = |p: Value| format!("{:#}", check_aws_provider(&p, &v, "p").unwrap_err());
        assert!(
            err(json!({"Url": "oidc.example.com/c/", "ClientIDList": ["sts.amazonaws.com"]}))
                .contains("trailing slash")
        );
        assert!(err(
            json!({"Url": "oidc.example.com/other", "ClientIDList": ["sts.amazonaws.com"]})
        )
        .contains("no provider"));
        assert!(
            err(json!({"Url": "oidc.example.com/c", "ClientIDList": ["sigstore"]}))
                .starts_with("Incorrect token audience")
        );
        assert!(err(json!({"ClientIDList": []})).contains("no \"Url\""));
    }

    #[test]
    fn a_key_round_trips_through_its_jwk() {
        for kind in [KeyType::Rsa2048, KeyType::EcP256] {
            let k = PrivateKey::generate(kind).unwrap().public_key();
            let jwk = serde_json::to_value(k.to_jwk()).unwrap();
            assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), k);
        }
        let bad = json!({"kty": "oct", "k": "x"});
        assert!(PublicKey::from_jwk(&bad)
            .unwrap_err()
            .to_string()
            .contains("kty"));
    }
}
