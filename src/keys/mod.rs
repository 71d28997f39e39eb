//! Service-account keys: loading them the way kube-apiserver does, generating
//! them, the Kubernetes key id, JWKS and OpenID discovery documents (pure), and
//! the `keygen`, `discovery` and `aws` commands.
//!
//! CONTRACT used by `apply` (keep these signatures):
//! - `PrivateKey::parse(pem, path)` reads a signing key as
//!   `--service-account-signing-key-file` does; errors name `path`.
//! - `PrivateKey::generate(KeyType)`, `.public_key()`, `.to_pkcs8_pem()`
//!   (a `Zeroizing<String>`: derefs to `String`, wiped on drop).
//! - `parse_public_keys(pem, path)` reads every key in a key file as
//!   `--service-account-key-file` does.
//! - `PublicKey::kid()`, `.alg()`, `.to_pem()`, `PartialEq` by key material.

pub mod aws;
pub mod claims;
pub mod commands;
pub mod discovery;
pub mod jwk;
mod jws;
mod load;
mod pem;
pub mod thumbprint;

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use der::pem::LineEnding;
use pkcs8::{EncodePrivateKey, EncodePublicKey};
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cli::KeyType;

pub use load::{read_key_file, KeyFile};

/// The NIST curves kube-apiserver signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// JWK `crv`.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
    /// JWS `alg` (kube-apiserver pkg/serviceaccount/jwt.go).
    pub fn alg(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P384 => "ES384",
            Curve::P521 => "ES512",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Material {
    /// Big-endian, no leading zeros (as go-jose writes `n` and `e`).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Affine coordinates, each padded to the field size.
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// A public key as the apiserver uses it to verify tokens.
///
/// Equality is by key material: two keys are equal when their canonical PKIX
/// DER encodings are.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Canonical PKIX (SubjectPublicKeyInfo) DER, as Go's
    /// `x509.MarshalPKIXPublicKey` writes it.
    spki_der: Vec<u8>,
    material: Material,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("alg", &self.alg())
            .field("kid", &self.kid())
            .finish()
    }
}

/// A private signing key. Its bytes never appear in output or logs (no
/// `Debug` of the material; the underlying types wipe themselves on drop).
pub struct PrivateKey {
    inner: PrivateInner,
}

enum PrivateInner {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("alg", &self.public_key().alg())
            .field("kid", &self.public_key().kid())
            .finish_non_exhaustive()
    }
}

macro_rules! ec_public {
    ($curve:ident, $variant:expr, $key:expr) => {{
        use $curve::elliptic_curve::sec1::ToEncodedPoint;
        let key: &$curve::PublicKey = $key;
        let point = key.to_encoded_point(false);
        let spki_der = key
            .to_public_key_der()
            .expect("a valid EC public key always encodes")
            .into_vec();
        PublicKey {
            spki_der,
            material: Material::Ec {
                curve: $variant,
                x: point.x().expect("uncompressed point").to_vec(),
                y: point.y().expect("uncompressed point").to_vec(),
            },
        }
    }};
}

impl PublicKey {
    pub(crate) fn from_rsa(key: &rsa::RsaPublicKey) -> Self {
        use rsa::traits::PublicKeyParts;
        let spki_der = key
            .to_public_key_der()
            .expect("a valid RSA public key always encodes")
            .into_vec();
        PublicKey {
            spki_der,
            material: Material::Rsa {
                n: key.n().to_bytes_be(),
                e: key.e().to_bytes_be(),
            },
        }
    }

    pub(crate) fn from_p256(key: &p256::PublicKey) -> Self {
        ec_public!(p256, Curve::P256, key)
    }

    pub(crate) fn from_p384(key: &p384::PublicKey) -> Self {
        ec_public!(p384, Curve::P384, key)
    }

    pub(crate) fn from_p521(key: &p521::PublicKey) -> Self {
        ec_public!(p521, Curve::P521, key)
    }

    /// Kubernetes' key id: base64url (unpadded) SHA-256 of the PKIX DER
    /// (`keyIDFromPublicKey` in pkg/serviceaccount/jwt.go).
    pub fn kid(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(&self.spki_der))
    }

    /// JWS algorithm: RS256, ES256, ES384 or ES512.
    pub fn alg(&self) -> &'static str {
        match &self.material {
            Material::Rsa { .. } => "RS256",
            Material::Ec { curve, .. } => curve.alg(),
        }
    }

    /// JWK `kty`: `RSA` or `EC`.
    pub fn kty(&self) -> &'static str {
        match &self.material {
            Material::Rsa { .. } => "RSA",
            Material::Ec { .. } => "EC",
        }
    }

    /// The canonical PKIX DER the key id is computed over.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// PKIX `PUBLIC KEY` PEM (LF line endings, trailing newline).
    pub fn to_pem(&self) -> String {
        der::pem::encode_string("PUBLIC KEY", LineEnding::LF, &self.spki_der)
            .expect("PEM encoding of bytes cannot fail")
    }
}

impl PrivateKey {
    /// Read a signing key as `--service-account-signing-key-file` does: the
    /// first `RSA PRIVATE KEY` (PKCS#1), `EC PRIVATE KEY` (SEC1) or unencrypted
    /// `PRIVATE KEY` (PKCS#8) block that parses wins; other blocks are ignored.
    pub fn parse(pem: &[u8], path: &Path) -> anyhow::Result<Self> {
        load::parse_private_key(pem, path)
    }

    /// A fresh key pair from the OS random source.
    pub fn generate(kind: KeyType) -> anyhow::Result<Self> {
        let inner = match kind {
            KeyType::Rsa2048 | KeyType::Rsa4096 => {
                let bits = if kind == KeyType::Rsa2048 { 2048 } else { 4096 };
                let key = rsa::RsaPrivateKey::new(&mut OsRng, bits)
                    .map_err(|e| anyhow::anyhow!("generating an RSA-{bits} key: {e}"))?;
                PrivateInner::Rsa(Box::new(key))
            }
            KeyType::EcP256 => PrivateInner::P256(p256::SecretKey::random(&mut OsRng)),
        };
        Ok(PrivateKey { inner })
    }

    pub fn public_key(&self) -> PublicKey {
        match &self.inner {
            PrivateInner::Rsa(k) => PublicKey::from_rsa(&k.to_public_key()),
            PrivateInner::P256(k) => PublicKey::from_p256(&k.public_key()),
            PrivateInner::P384(k) => PublicKey::from_p384(&k.public_key()),
            PrivateInner::P521(k) => PublicKey::from_p521(&k.public_key()),
        }
    }

    /// PKCS#8 `PRIVATE KEY` PEM (unencrypted, LF line endings), wiped on drop.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let pem = match &self.inner {
            PrivateInner::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF),
            PrivateInner::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            PrivateInner::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
            PrivateInner::P521(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.expect("encoding a valid private key as PKCS#8 cannot fail")
    }
}

/// Every public key in a key file, read as `--service-account-key-file` reads
/// it. Blocks the apiserver skips (a PKCS#1 `RSA PUBLIC KEY`, an EC key in
/// PKCS#8 form, an encrypted key...) are skipped with a `tracing` warning
/// (`EC PARAMETERS` silently); duplicates are dropped. Use [`read_key_file`] to get the notes as data.
pub fn parse_public_keys(pem: &[u8], path: &Path) -> anyhow::Result<Vec<PublicKey>> {
    let file = read_key_file(pem, path)?;
    for note in &file.skipped {
        tracing::warn!("{note}");
    }
    Ok(file.keys)
}

/// The DER of every `CERTIFICATE` block in a PEM file (a CA bundle).
pub fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    pem::scan(pem)
        .blocks
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.der.to_vec())
        .collect()
}

#[cfg(test)]
mod tests;
