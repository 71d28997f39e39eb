//! Service-account tokens for the simulator: issuing (kubernetes/kubernetes
//! `pkg/serviceaccount/claims.go` `Claims` + `jwt.go` `jwtTokenGenerator`) and
//! authenticating (`jwt.go` `jwtTokenAuthenticator.AuthenticateToken` +
//! `claims.go` `validator.Validate`), written from the upstream source.
//!
//! Issuing: header `{"alg":..,"kid":..}`, claims `aud`, `exp`, `iat`, `iss`,
//! `jti`, `kubernetes.io{namespace, serviceaccount{name, uid}}`, `nbf`, `sub`
//! (go-jose merges claims into a map, so keys come out sorted).
//!
//! Authenticating, in upstream's order:
//! 1. not a compact JWS, or its unverified `iss` is not one of the issuers:
//!    not recognized (unauthenticated, no error);
//! 2. keys: those whose kid equals the header `kid`, or all keys when the
//!    token has none; none -> "invalid signature, no keys found";
//! 3. the signature must verify with one of them;
//! 4. `aud` must intersect the requested audiences (TokenReview
//!    `spec.audiences`, else the api-audiences);
//! 5. `exp`/`nbf`/`iat` with go-jose's 60 s leeway;
//! 6. the service account must exist with the uid in the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::keys::{PublicKey, SigningKey};

/// go-jose `jwt.DefaultLeeway`.
pub const LEEWAY_SECS: i64 = 60;

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}

/// A random UUID (v4 layout), for `jti`.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_string(&b)
}

pub fn uuid_string(b: &[u8]) -> String {
    let h: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What a token is issued for.
pub struct TokenSpec<'a> {
    pub issuer: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub audiences: &'a [String],
    pub issued_at: i64,
    pub expiration_seconds: i64,
}

/// A signed compact JWS, as kube-apiserver's TokenRequest issues it.
pub fn issue(key: &SigningKey, spec: &TokenSpec<'_>) -> String {
    let public = key.public();
    let header = format!(r#"{{"alg":"{}","kid":"{}"}}"#, key.alg(), public.kid());
    let claims = json!({
        "aud": spec.audiences,
        "exp": spec.issued_at + spec.expiration_seconds,
        "iat": spec.issued_at,
        "iss": spec.issuer,
        "jti": random_uuid(),
        "kubernetes.io": {
            "namespace": spec.namespace,
            "serviceaccount": { "name": spec.name, "uid": spec.uid },
        },
        "nbf": spec.issued_at,
        "sub": format!("system:serviceaccount:{}:{}", spec.namespace, spec.name),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The outcome of authenticating a token (the TokenReview status).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Authn {
    pub authenticated: bool,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub jti: Option<String>,
    /// The intersection of the token's and the requested audiences.
    pub audiences: Vec<String>,
    /// Why not, when upstream gives a reason (an unrecognized issuer gives none).
    pub error: Option<String>,
}

impl Authn {
    fn fail(error: impl Into<String>) -> Self {
        Authn {
            error: Some(error.into()),
            ..Default::default()
        }
    }

    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// What the validator needs to know about the cluster.
pub struct Validation<'a> {
    pub issuers: &'a [String],
    pub keys: &'a [PublicKey],
    /// The api-audiences (implicit audiences).
    pub api_audiences: &'a [String],
    /// TokenReview `spec.audiences` when given.
    pub requested: Option<&'a [String]>,
    pub now: i64,
    /// The uid of a service account, if it exists.
    pub service_account_uid: &'a dyn Fn(&str, &str) -> Option<String>,
}

/// go-jose's lenient base64url: padding optional.
fn b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn numeric(v: Option<&Value>) -> Result<Option<i64>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or(()),
        Some(_) => Err(()),
    }
}

/// `jwtTokenAuthenticator.AuthenticateToken` + the service-account validator.
pub fn authenticate(token: &str, v: &Validation<'_>) -> Authn {
    // hasCorrectIssuer: unverified look at `iss`.
    if token.trim_start().starts_with('{') {
        return Authn::default();
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Authn::default();
    }
    let Some(payload) = URL_SAFE_NO_PAD.decode(parts[1]).ok() else {
        return Authn::default();
    };
    let Ok(claims) = serde_json::from_slice::<Value>(&payload) else {
        return Authn::default();
    };
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if !v.issuers.iter().any(|i| i == iss) {
        return Authn::default();
    }

    // jwt.ParseSigned
    let Some(header) = b64url(parts[0]).and_then(|h| serde_json::from_slice::<Value>(&h).ok())
    else {
        return Authn::default();
    };
    let Some(signature) = b64url(parts[2]) else {
        return Authn::default();
    };
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if !matches!(alg, "RS256" | "ES256" | "ES384" | "ES512") {
        return Authn::default();
    }

    // Pick keys by kid, or all of them.
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or("");
    let keys: Vec<&PublicKey> = if kid.is_empty() {
        v.keys.iter().collect()
    } else {
        v.keys.iter().filter(|k| k.kid() == kid).collect()
    };
    if keys.is_empty() {
        return Authn::fail("invalid signature, no keys found");
    }
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    if !keys
        .iter()
        .any(|k| k.verify(alg, signing_input.as_bytes(), &signature))
    {
        return Authn::fail("go-jose/go-jose: error in cryptographic primitive");
    }

    // Audiences.
    let token_auds: Vec<String> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let token_auds = if token_auds.is_empty() {
        v.api_audiences.to_vec()
    } else {
        token_auds
    };
    let requested = v.requested.unwrap_or(v.api_audiences);
    let auds: Vec<String> = token_auds
        .iter()
        .filter(|a| requested.contains(a))
        .cloned()
        .collect();
    if auds.is_empty() && !v.api_audiences.is_empty() {
        return Authn::fail(format!(
            "token audiences {} is invalid for the target audiences {}",
            go_quote_list(&token_auds),
            go_quote_list(requested)
        ));
    }

    // Time claims (go-jose Claims.Validate with the default leeway).
    let (Ok(exp), Ok(nbf), Ok(iat)) = (
        numeric(claims.get("exp")),
        numeric(claims.get("nbf")),
        numeric(claims.get("iat")),
    ) else {
        return Authn::fail("Token could not be validated.");
    };
    if nbf.is_some_and(|t| v.now + LEEWAY_SECS < t) || iat.is_some_and(|t| v.now + LEEWAY_SECS < t)
    {
        return Authn::fail("Token could not be validated.");
    }
    if exp.is_some_and(|t| v.now - LEEWAY_SECS > t) {
        return Authn::fail("Token has expired.");
    }

    // The service account must still exist, with the same uid.
    let k8s = claims.get("kubernetes.io");
    let get = |path: &[&str]| -> String {
        let mut cur = k8s;
        for p in path {
            cur = cur.and_then(|c| c.get(*p));
        }
        cur.and_then(Value::as_str).unwrap_or("").to_string()
    };
    let namespace = get(&["namespace"]);
    let name = get(&["serviceaccount", "name"]);
    let uid = get(&["serviceaccount", "uid"]);
    match (v.service_account_uid)(&namespace, &name) {
        None => return Authn::fail(format!("serviceaccounts {name:?} not found")),
        Some(real) if real != uid => {
            return Authn::fail(format!(
                "ServiceAccount UID ({real}) does not match claim ({uid})"
            ))
        }
        Some(_) => {}
    }
    Authn {
        authenticated: true,
        namespace,
        name,
        uid,
        jti: claims
            .get("jti")
            .and_then(Value::as_str)
            .map(str::to_string),
        audiences: auds,
        error: None,
    }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", inner.join(" "))
}

/// Decode a token's header and claims without verifying anything (for tests).
pub fn decode_unverified(token: &str) -> anyhow::Result<(Value, Value)> {
    let parts: Vec<&str> = token.split('.').collect();
    anyhow::ensure!(parts.len() == 3, "not a compact JWS: {} parts", parts.len());
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0])?)?;
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
    Ok((header, claims))
}

/// RFC 3339 UTC (`2024-05-06T09:12:44Z`), as metav1.Time marshals.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
