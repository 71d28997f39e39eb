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

impl PublicKey {
    /// The key a published JWK describes (`kty` RSA with `n`/`e`, or EC with
    /// `crv`/`x`/`y`), to verify a token with exactly what a cloud provider reads.
    pub fn from_jwk(jwk: &serde_json::Value) -> anyhow::Result<Self> {
        use anyhow::{anyhow, bail};
        let field = |name: &str| -> anyhow::Result<Vec<u8>> {
            let v = jwk[name]
                .as_str()
                .ok_or_else(|| anyhow!("the JWK has no \"{name}\" string"))?;
            URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|e| anyhow!("the JWK's \"{name}\" is not base64url without padding: {e}"))
        };
        match jwk["kty"].as_str() {
            Some("RSA") => {
                let n = rsa::BigUint::from_bytes_be(&field("n")?);
                let e = rsa::BigUint::from_bytes_be(&field("e")?);
                let key = rsa::RsaPublicKey::new(n, e)
                    .map_err(|e| anyhow!("the JWK is not a valid RSA key: {e}"))?;
                Ok(PublicKey::from_rsa(&key))
            }
            Some("EC") => {
                let mut point = vec![0x04];
                point.extend(field("x")?);
                point.extend(field("y")?);
                let bad = |e: p256::elliptic_curve::Error| {
                    anyhow!("the JWK is not a valid EC point: {e}")
                };
                match jwk["crv"].as_str() {
                    Some("P-256") => Ok(PublicKey::from_p256(
                        &p256::PublicKey::from_sec1_bytes(&point).map_err(bad)?,
                    )),
                    Some("P-384") => Ok(PublicKey::from_p384(
                        &p384::PublicKey::from_sec1_bytes(&point).map_err(bad)?,
                    )),
                    Some("P-521") => Ok(PublicKey::from_p521(
                        &p521::PublicKey::from_sec1_bytes(&point).map_err(bad)?,
                    )),
                    other => bail!("the JWK's curve {other:?} is not P-256, P-384 or P-521"),
                }
            }
            other => bail!("the JWK's kty {other:?} is not RSA or EC"),
        }
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
