//! JSON Web Keys as kube-apiserver serves them at `/openid/v1/jwks`
//! (pkg/serviceaccount/openidmetadata.go, written by go-jose).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use super::{Material, PublicKey};

/// One JWK. Field order is go-jose's (`use`, `kty`, `kid`, `crv`, `alg`,
/// `x`, `y`, `n`, `e`), so the output matches the apiserver's byte for byte
/// up to whitespace. Only fields GCP accepts in an uploaded JWKS are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub kty: &'static str,
    pub kid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    pub alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// `{"keys": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl PublicKey {
    pub fn to_jwk(&self) -> Jwk {
        let mut jwk = Jwk {
            use_: "sig",
            kty: self.kty(),
            kid: self.kid(),
            crv: None,
            alg: self.alg(),
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match &self.material {
            Material::Rsa { n, e } => {
                jwk.n = Some(b64(n));
                jwk.e = Some(b64(e));
            }
            Material::Ec { curve, x, y } => {
                jwk.crv = Some(curve.jwk_name());
                jwk.x = Some(b64(x));
                jwk.y = Some(b64(y));
            }
        }
        jwk
    }
}

/// The JWKS of `keys`, in the order given.
pub fn jwks(keys: &[PublicKey]) -> Jwks {
    Jwks {
        keys: keys.iter().map(PublicKey::to_jwk).collect(),
    }
}

/// Pretty-printed JSON (two-space indent) with a trailing newline: the exact
/// bytes written to files, stable for the same input.
pub fn to_pretty_json<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("serializing plain structs cannot fail");
    s.push('\n');
    s
}
