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

impl PublicKey {
    /// The key of a JWK as published for a cloud provider, refused when the
    /// JWK contradicts itself: its `kid` must be the key id kube-apiserver
    /// computes from the key (see [`PublicKey::kid`]), a `use` must be `sig`
    /// and an `alg` the key's own (RS256 for RSA, ES256/384/512 by curve).
    /// RFC 7517 makes `use` and `alg` optional: absent, they are not required.
    pub fn from_published_jwk(jwk: &serde_json::Value) -> anyhow::Result<Self> {
        use anyhow::bail;
        let key = Self::from_jwk(jwk)?;
        let text = |name: &str| -> anyhow::Result<Option<&str>> {
            match &jwk[name] {
                serde_json::Value::Null => Ok(None),
                serde_json::Value::String(s) => Ok(Some(s)),
                other => bail!("the JWK is malformed: its \"{name}\" is {other}, not a string"),
            }
        };
        if let Some(u) = text("use")? {
            if u != "sig" {
                bail!(
                    "the JWK's \"use\" is {u:?}, not \"sig\": it is not published as a signature key, and \
                     verifiers skip it"
                );
            }
        }
        if let Some(alg) = text("alg")? {
            if alg != key.alg() {
                bail!(
                    "the JWK's \"alg\" is {alg:?}, but its key ({}) signs with {}: verifiers refuse the mismatch",
                    key.describe(),
                    key.alg()
                );
            }
        }
        let want = key.kid();
        match text("kid")? {
            Some(kid) if kid == want => Ok(key),
            Some(kid) => bail!(
                "the JWK's kid {kid:?} is not the id of its key material, {want:?} (base64url SHA-256 of the \
                 key's PKIX DER, as kube-apiserver computes it): the JWKS was not written from this key \
                 (irsa-agent discovery writes it from the key files)"
            ),
            None => bail!("the JWK has no \"kid\": cloud providers find the key by the token's kid"),
        }
    }

    /// `RSA` or `EC P-256` etc., for messages.
    fn describe(&self) -> String {
        match &self.material {
            Material::Rsa { .. } => "RSA".to_string(),
            Material::Ec { curve, .. } => format!("EC {}", curve.jwk_name()),
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};

    use super::*;
    use crate::keys::PrivateKey;

    fn jwk_of(fixture: &[u8]) -> (PublicKey, Value) {
        let k = PrivateKey::parse(fixture, Path::new("k"))
            .unwrap()
            .public_key();
        let jwk = serde_json::to_value(k.to_jwk()).unwrap();
        (k, jwk)
    }

    #[test]
    fn a_published_jwk_must_agree_with_itself() {
        let (rsa, rsa_jwk) = jwk_of(include_bytes!("../../tests/fixtures/keys/rsa-pkcs8.pem"));
        let (ec, ec_jwk) = jwk_of(include_bytes!("../../tests/fixtures/keys/ec384-sec1.pem"));
        assert_eq!(PublicKey::from_published_jwk(&rsa_jwk).unwrap(), rsa);
        assert_eq!(PublicKey::from_published_jwk(&ec_jwk).unwrap(), ec);
        // use and alg are optional (RFC 7517).
        let mut bare = ec_jwk.clone();
        bare.as_object_mut().unwrap().remove("use");
        bare.as_object_mut().unwrap().remove("alg");
        assert_eq!(PublicKey::from_published_jwk(&bare).unwrap(), ec);

        let err = |base: &Value, field: &str, v: Value| {
            let mut j = base.clone();
            j[field] = v;
            PublicKey::from_published_jwk(&j).unwrap_err().to_string()
        };
        let e = err(&rsa_jwk, "kid", json!(ec.kid()));
        assert!(
            e.contains("is not the id of its key material") && e.contains(&rsa.kid()),
            "{e}"
        );
        assert!(err(&rsa_jwk, "kid", json!(7)).contains("its \"kid\" is 7, not a string"));
        assert!(err(&rsa_jwk, "kid", Value::Null).contains("has no \"kid\""));
        assert!(err(&rsa_jwk, "use", json!("enc")).contains("\"use\" is \"enc\", not \"sig\""));
        let e = err(&rsa_jwk, "alg", json!("RS512"));
        assert!(
            e.contains("\"alg\" is \"RS512\", but its key (RSA) signs with RS256"),
            "{e}"
        );
        let e = err(&ec_jwk, "alg", json!("ES256"));
        assert!(e.contains("its key (EC P-384) signs with ES384"), "{e}");
    }
}
