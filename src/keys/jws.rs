//! JWS signatures as kube-apiserver makes them (RS256 = RSASSA-PKCS1-v1_5 with
//! SHA-256; ES256/384/512 = ECDSA, signature as fixed-size `r || s`), for
//! `verify` (check a TokenRequest token with the installed public key), and
//! signing for the unit tests only: the built tool never signs (nor
//! decrypts) with a private key, which keeps it out of reach of the `rsa`
//! crate's timing advisory RUSTSEC-2023-0071 (docs/security.md).

use anyhow::Context;
use pkcs8::DecodePublicKey;
use rsa::signature::Verifier;

use super::{Curve, Material, PublicKey};
#[cfg(test)]
use super::{PrivateInner, PrivateKey};

#[cfg(test)]
impl PrivateKey {
    /// Sign `signing_input` (`base64url(header) + "." + base64url(payload)`)
    /// with the algorithm [`PublicKey::alg`] names.
    pub fn sign_jws(&self, signing_input: &[u8]) -> Vec<u8> {
        use rsa::signature::{SignatureEncoding, Signer};
        match &self.inner {
            PrivateInner::Rsa(k) => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone())
                .sign(signing_input)
                .to_vec(),
            PrivateInner::P256(k) => {
                let s: p256::ecdsa::Signature =
                    p256::ecdsa::SigningKey::from(k).sign(signing_input);
                s.to_bytes().to_vec()
            }
            PrivateInner::P384(k) => {
                let s: p384::ecdsa::Signature =
                    p384::ecdsa::SigningKey::from(k).sign(signing_input);
                s.to_bytes().to_vec()
            }
            PrivateInner::P521(k) => {
                let key = p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
                    .expect("a valid secret key is a valid signing key");
                let s: p521::ecdsa::Signature = key.sign(signing_input);
                s.to_bytes().to_vec()
            }
        }
    }
}

impl PublicKey {
    /// Verify a JWS signature made with `alg` over `signing_input`. Errors
    /// when `alg` is not this key's algorithm or the signature does not verify.
    pub fn verify_jws(
        &self,
        alg: &str,
        signing_input: &[u8],
        signature: &[u8],
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            alg == self.alg(),
            "token algorithm {alg} does not match key {} ({})",
            self.kid(),
            self.alg()
        );
        let bad = || format!("signature does not verify with key {}", self.kid());
        match &self.material {
            Material::Rsa { .. } => {
                let key = rsa::RsaPublicKey::from_public_key_der(&self.spki_der)
                    .context("RSA public key")?;
                let sig = rsa::pkcs1v15::Signature::try_from(signature).with_context(bad)?;
                rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
                    .verify(signing_input, &sig)
                    .with_context(bad)
            }
            Material::Ec { curve, .. } => match curve {
                Curve::P256 => {
                    let key = p256::ecdsa::VerifyingKey::from_public_key_der(&self.spki_der)
                        .context("EC public key")?;
                    let sig = p256::ecdsa::Signature::from_slice(signature).with_context(bad)?;
                    key.verify(signing_input, &sig).with_context(bad)
                }
                Curve::P384 => {
                    let key = p384::ecdsa::VerifyingKey::from_public_key_der(&self.spki_der)
                        .context("EC public key")?;
                    let sig = p384::ecdsa::Signature::from_slice(signature).with_context(bad)?;
                    key.verify(signing_input, &sig).with_context(bad)
                }
                Curve::P521 => {
                    let point = p521::PublicKey::from_public_key_der(&self.spki_der)
                        .context("EC public key")?;
                    let key = p521::ecdsa::VerifyingKey::from_affine(*point.as_affine())
                        .context("EC public key")?;
                    let sig = p521::ecdsa::Signature::from_slice(signature).with_context(bad)?;
                    key.verify(signing_input, &sig).with_context(bad)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn every_key_type_signs_and_verifies_and_tampering_fails() {
        let fixtures: [(&[u8], &str); 4] = [
            (
                include_bytes!("../../tests/fixtures/keys/rsa-pkcs8.pem"),
                "RS256",
            ),
            (
                include_bytes!("../../tests/fixtures/keys/ec256-sec1.pem"),
                "ES256",
            ),
            (
                include_bytes!("../../tests/fixtures/keys/ec384-sec1.pem"),
                "ES384",
            ),
            (
                include_bytes!("../../tests/fixtures/keys/ec521-sec1.pem"),
                "ES512",
            ),
        ];
        for (pem, alg) in fixtures {
            let k = PrivateKey::parse(pem, Path::new("k")).unwrap();
            let public = k.public_key();
            let sig = k.sign_jws(b"header.payload");
            public.verify_jws(alg, b"header.payload", &sig).unwrap();
            assert!(
                public.verify_jws(alg, b"header.payloaX", &sig).is_err(),
                "{alg}"
            );
            assert!(public.verify_jws("HS256", b"header.payload", &sig).is_err());
        }
    }

    #[test]
    fn verifies_an_rs256_signature_made_by_openssl() {
        // printf 'header.payload' | openssl dgst -sha256 \
        //   -sign tests/fixtures/keys/rsa-pkcs8.pem -out tests/fixtures/keys/rsa-sig.bin
        let sig = include_bytes!("../../tests/fixtures/keys/rsa-sig.bin");
        let public = super::super::parse_public_keys(
            include_bytes!("../../tests/fixtures/keys/rsa-pub.pem"),
            Path::new("rsa-pub.pem"),
        )
        .unwrap()
        .remove(0);
        public.verify_jws("RS256", b"header.payload", sig).unwrap();
    }
}
