//! Service-account keys: loading them the way kube-apiserver does, generating
//! them, the Kubernetes key id, JWKS and OpenID discovery documents (pure), and
//! the `keygen`, `discovery` and `aws` commands.
//!
//! CONTRACT used by `apply` (keep these signatures):
//! - `PrivateKey::parse(pem, path)` reads a signing key as
//!   `--service-account-signing-key-file` does; errors name `path`.
//! - `PrivateKey::generate(KeyType)`, `.public_key()`, `.to_pkcs8_pem()`.
//! - `parse_public_keys(pem, path)` reads every key in a key file as
//!   `--service-account-key-file` does.
//! - `PublicKey::kid()`, `.alg()`, `.to_pem()`, `PartialEq` by key material.

pub mod commands;

use std::path::Path;

use crate::cli::KeyType;

/// A public key as the apiserver uses it to verify tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    _todo: (),
}

/// A private signing key. Its bytes never appear in output or logs.
pub struct PrivateKey {
    _todo: (),
}

impl PublicKey {
    /// Kubernetes' key id: base64url (unpadded) SHA-256 of the PKIX DER.
    pub fn kid(&self) -> String {
        unimplemented!()
    }
    /// JWS algorithm: RS256, ES256, ES384 or ES512.
    pub fn alg(&self) -> &'static str {
        unimplemented!()
    }
    /// PKIX `PUBLIC KEY` PEM.
    pub fn to_pem(&self) -> String {
        unimplemented!()
    }
}

impl PrivateKey {
    pub fn parse(_pem: &[u8], _path: &Path) -> anyhow::Result<Self> {
        unimplemented!()
    }
    pub fn generate(_kind: KeyType) -> anyhow::Result<Self> {
        unimplemented!()
    }
    pub fn public_key(&self) -> PublicKey {
        unimplemented!()
    }
    /// PKCS#8 `PRIVATE KEY` PEM.
    pub fn to_pkcs8_pem(&self) -> String {
        unimplemented!()
    }
}

/// Every public key in a key file, read as `--service-account-key-file` reads it.
pub fn parse_public_keys(_pem: &[u8], _path: &Path) -> anyhow::Result<Vec<PublicKey>> {
    unimplemented!()
}
