//! Reading key files exactly as kube-apiserver does
//! (k8s.io/client-go/util/keyutil: `ParsePublicKeysPEM` for
//! `--service-account-key-file`, `ParsePrivateKeyPEM` for
//! `--service-account-signing-key-file`).
//!
//! Key files: the block label is ignored; each block's bytes are tried as an
//! RSA private key (PKCS#1, or PKCS#8 holding RSA), a PKIX public key or
//! certificate (RSA), a SEC1 EC private key, a PKIX public key or certificate
//! (EC). Blocks that are none of these are tolerated; a file with no key at
//! all is an error. Notably skipped by the apiserver: a PKCS#1
//! `RSA PUBLIC KEY` block and an EC key in PKCS#8 form.
//!
//! Signing keys: by label, `EC PRIVATE KEY` (SEC1), `RSA PRIVATE KEY`
//! (PKCS#1), `PRIVATE KEY` (PKCS#8); the first one that parses wins.

use std::path::Path;

use der::asn1::ObjectIdentifier as Oid;
use der::Decode;
use pkcs1::DecodeRsaPrivateKey;
use pkcs8::DecodePrivateKey;

use super::pem::{scan, Block};
use super::{PrivateInner, PrivateKey, PublicKey};

const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
const ED448: Oid = Oid::new_unwrap("1.3.101.113");
const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
const SECP521R1: Oid = Oid::new_unwrap("1.3.132.0.35");

/// The largest RSA modulus accepted (Go accepts any size; 16384 bits is far
/// beyond anything used for service-account keys).
const RSA_MAX_BITS: usize = 16384;

/// The keys of one key file and a note for each block the apiserver would skip.
#[derive(Debug)]
pub struct KeyFile {
    pub keys: Vec<PublicKey>,
    /// One line each, starting with the file path: what was skipped and why.
    pub skipped: Vec<String>,
}

fn curve_name(oid: Oid) -> String {
    let name = match oid.to_string().as_str() {
        "1.3.132.0.10" => "secp256k1",
        "1.3.132.0.33" => "P-224",
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1",
        "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1",
        "1.3.36.3.3.2.8.1.1.13" => "brainpoolP512r1",
        _ => return format!("with OID {oid}"),
    };
    name.to_string()
}

fn unsupported_curve(oid: Oid) -> String {
    format!(
        "unsupported elliptic curve {}: kube-apiserver reads only P-256, P-384 and P-521 keys",
        curve_name(oid)
    )
}

const ENCRYPTED: &str =
    "encrypted private key: kube-apiserver cannot read encrypted keys (decrypt it first, e.g. `openssl pkey -in FILE -out PLAIN`)";

/// A PKIX SubjectPublicKeyInfo (DER) as Go's `x509.ParsePKIXPublicKey` +
/// the RSA/ECDSA type check read it.
fn public_from_spki(der: &[u8]) -> Result<PublicKey, String> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| e.to_string())?;
    let bits = spki.subject_public_key.raw_bytes();
    match spki.algorithm.oid {
        RSA_ENCRYPTION => {
            let k = pkcs1::RsaPublicKey::from_der(bits).map_err(|e| format!("bad RSA key: {e}"))?;
            rsa_public(k.modulus.as_bytes(), k.public_exponent.as_bytes())
        }
        EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters_oid()
                .map_err(|_| "EC key without a named curve".to_string())?;
            if bits.first() != Some(&4) {
                // Go's elliptic.Unmarshal takes uncompressed points only.
                return Err(
                    "EC public key with a compressed point, which kube-apiserver cannot read"
                        .into(),
                );
            }
            let bad = |e: p256::elliptic_curve::Error| format!("bad EC point: {e}");
            match curve {
                SECP256R1 => Ok(PublicKey::from_p256(
                    &p256::PublicKey::from_sec1_bytes(bits).map_err(bad)?,
                )),
                SECP384R1 => Ok(PublicKey::from_p384(
                    &p384::PublicKey::from_sec1_bytes(bits).map_err(bad)?,
                )),
                SECP521R1 => Ok(PublicKey::from_p521(
                    &p521::PublicKey::from_sec1_bytes(bits).map_err(bad)?,
                )),
                other => Err(unsupported_curve(other)),
            }
        }
        ED25519 | ED448 => {
            Err("Ed25519/Ed448 key: kube-apiserver reads only RSA and ECDSA keys".into())
        }
        other => Err(format!(
            "unsupported key algorithm {other}: kube-apiserver reads only RSA and ECDSA keys"
        )),
    }
}

fn rsa_public(n: &[u8], e: &[u8]) -> Result<PublicKey, String> {
    let key = rsa::RsaPublicKey::new_with_max_size(
        rsa::BigUint::from_bytes_be(n),
        rsa::BigUint::from_bytes_be(e),
        RSA_MAX_BITS,
    )
    .map_err(|e| format!("bad RSA key: {e}"))?;
    Ok(PublicKey::from_rsa(&key))
}

/// What one block of a key file yields: a key, or why the apiserver skips it.
fn read_public_block(block: &Block) -> Result<PublicKey, String> {
    if block.is_encrypted() {
        return Err(ENCRYPTED.into());
    }
    let der: &[u8] = &block.der;
    // 1. RSA private key: PKCS#1, then PKCS#8.
    if let Ok(k) = pkcs1::RsaPrivateKey::from_der(der) {
        return rsa_public(k.modulus.as_bytes(), k.public_exponent.as_bytes());
    }
    if let Ok(info) = pkcs8::PrivateKeyInfo::from_der(der) {
        return match info.algorithm.oid {
            RSA_ENCRYPTION => {
                let k = pkcs1::RsaPrivateKey::from_der(info.private_key)
                    .map_err(|e| format!("bad RSA private key: {e}"))?;
                rsa_public(k.modulus.as_bytes(), k.public_exponent.as_bytes())
            }
            EC_PUBLIC_KEY => Err(
                "EC private key in PKCS#8 form, which kube-apiserver does not read as a \
                 --service-account-key-file (it reads SEC1 `EC PRIVATE KEY` or the public key): \
                 publish the public key (`openssl pkey -in FILE -pubout`)"
                    .into(),
            ),
            ED25519 | ED448 => {
                Err("Ed25519/Ed448 key: kube-apiserver reads only RSA and ECDSA keys".into())
            }
            other => Err(format!("private key with unsupported algorithm {other}")),
        };
    }
    // 2. PKIX public key, or a certificate's.
    if spki::SubjectPublicKeyInfoRef::from_der(der).is_ok() {
        return public_from_spki(der);
    }
    if let Ok(cert) = x509_cert::Certificate::from_der(der) {
        let spki = der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info)
            .map_err(|e| format!("bad certificate: {e}"))?;
        return public_from_spki(&spki).map_err(|e| format!("certificate: {e}"));
    }
    // 3. SEC1 EC private key.
    if let Ok(k) = sec1::EcPrivateKey::from_der(der) {
        let curve = k
            .parameters
            .and_then(|p| p.named_curve())
            .ok_or("EC private key without a named curve")?;
        let bad = |e: p256::elliptic_curve::Error| format!("bad EC private key: {e}");
        return match curve {
            SECP256R1 => Ok(PublicKey::from_p256(
                &p256::SecretKey::from_sec1_der(der)
                    .map_err(bad)?
                    .public_key(),
            )),
            SECP384R1 => Ok(PublicKey::from_p384(
                &p384::SecretKey::from_sec1_der(der)
                    .map_err(bad)?
                    .public_key(),
            )),
            SECP521R1 => Ok(PublicKey::from_p521(
                &p521::SecretKey::from_sec1_der(der)
                    .map_err(bad)?
                    .public_key(),
            )),
            other => Err(unsupported_curve(other)),
        };
    }
    if pkcs1::RsaPublicKey::from_der(der).is_ok() {
        return Err(
            "PKCS#1 RSA public key, which kube-apiserver silently skips: convert it to PKIX with \
             `openssl rsa -RSAPublicKey_in -in FILE -pubout`"
                .into(),
        );
    }
    Err("not a key kube-apiserver reads".into())
}

fn not_pem(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: not a PEM key file (no -----BEGIN ...----- block): expected a public key, private key or certificate",
        path.display()
    )
}

/// Read a `--service-account-key-file`: every key, in file order, duplicates
/// dropped, plus a note for each skipped block. Errors when no key is found.
pub fn read_key_file(pem: &[u8], path: &Path) -> anyhow::Result<KeyFile> {
    let scan = scan(pem);
    if scan.blocks.is_empty() && scan.broken.is_empty() {
        return Err(not_pem(path));
    }
    let mut keys: Vec<PublicKey> = Vec::new();
    let mut skipped: Vec<String> = scan
        .broken
        .iter()
        .map(|b| format!("{}: {b}", path.display()))
        .collect();
    let mut all_notes = scan.broken.clone();
    for block in &scan.blocks {
        let note = match read_public_block(block) {
            Ok(key) => match keys.iter().position(|k| *k == key) {
                None => {
                    keys.push(key);
                    continue;
                }
                Some(i) => format!("duplicate of key {} (kid {}), dropped", i + 1, key.kid()),
            },
            Err(why) => why,
        };
        let note = format!("{}: {note}", block.describe());
        // `openssl ecparam -genkey` output starts with an EC PARAMETERS block:
        // expected beside a key, not worth a warning.
        if block.label != "EC PARAMETERS" {
            skipped.push(format!("{}: {note}", path.display()));
        }
        all_notes.push(note);
    }
    if keys.is_empty() {
        let why = all_notes.join("; ");
        anyhow::bail!("{}: no key kube-apiserver can read: {why}", path.display());
    }
    Ok(KeyFile { keys, skipped })
}

/// What one block of a signing-key file yields, if its label is a private
/// key label: the key, or why it cannot sign.
fn read_private_block(block: &Block) -> Option<Result<PrivateInner, String>> {
    let der: &[u8] = &block.der;
    let bad = |e: p256::elliptic_curve::Error| format!("bad EC private key: {e}");
    let ec = |curve: Oid| -> Result<PrivateInner, String> {
        match curve {
            SECP256R1 => Ok(PrivateInner::P256(
                p256::SecretKey::from_sec1_der(der).map_err(bad)?,
            )),
            SECP384R1 => Ok(PrivateInner::P384(
                p384::SecretKey::from_sec1_der(der).map_err(bad)?,
            )),
            SECP521R1 => Ok(PrivateInner::P521(
                p521::SecretKey::from_sec1_der(der).map_err(bad)?,
            )),
            other => Err(unsupported_curve(other)),
        }
    };
    if block.is_encrypted() {
        return Some(Err(ENCRYPTED.into()));
    }
    Some(match block.label.as_str() {
        "EC PRIVATE KEY" => match sec1::EcPrivateKey::from_der(der) {
            Ok(k) => match k.parameters.and_then(|p| p.named_curve()) {
                Some(curve) => ec(curve),
                None => Err("EC private key without a named curve".into()),
            },
            Err(e) => Err(format!("bad SEC1 EC private key: {e}")),
        },
        "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(der)
            .map(|k| PrivateInner::Rsa(Box::new(k)))
            .map_err(|e| format!("bad PKCS#1 RSA private key: {e}")),
        "PRIVATE KEY" => match pkcs8::PrivateKeyInfo::from_der(der) {
            Ok(info) => match info.algorithm.oid {
                RSA_ENCRYPTION => rsa::RsaPrivateKey::from_pkcs8_der(der)
                    .map(|k| PrivateInner::Rsa(Box::new(k)))
                    .map_err(|e| format!("bad RSA private key: {e}")),
                EC_PUBLIC_KEY => match info.algorithm.parameters_oid() {
                    Ok(SECP256R1) => p256::SecretKey::from_pkcs8_der(der)
                        .map(PrivateInner::P256)
                        .map_err(|e| format!("bad EC private key: {e}")),
                    Ok(SECP384R1) => p384::SecretKey::from_pkcs8_der(der)
                        .map(PrivateInner::P384)
                        .map_err(|e| format!("bad EC private key: {e}")),
                    Ok(SECP521R1) => p521::SecretKey::from_pkcs8_der(der)
                        .map(PrivateInner::P521)
                        .map_err(|e| format!("bad EC private key: {e}")),
                    Ok(other) => Err(unsupported_curve(other)),
                    Err(_) => Err("EC private key without a named curve".into()),
                },
                ED25519 | ED448 => Err(
                    "Ed25519/Ed448 key: kube-apiserver signs service-account tokens only with RSA or ECDSA keys"
                        .into(),
                ),
                other => Err(format!("private key with unsupported algorithm {other}")),
            },
            Err(e) => Err(format!("bad PKCS#8 private key: {e}")),
        },
        _ => return None,
    })
}

pub(super) fn parse_private_key(pem: &[u8], path: &Path) -> anyhow::Result<PrivateKey> {
    let scan = scan(pem);
    if scan.blocks.is_empty() && scan.broken.is_empty() {
        return Err(not_pem(path));
    }
    let mut notes = scan.broken.clone();
    for block in &scan.blocks {
        match read_private_block(block) {
            Some(Ok(inner)) => return Ok(PrivateKey { inner }),
            Some(Err(why)) => notes.push(format!("{}: {why}", block.describe())),
            None => notes.push(format!(
                "{}: not a private key (kube-apiserver reads `RSA PRIVATE KEY`, `EC PRIVATE KEY` or `PRIVATE KEY`)",
                block.describe()
            )),
        }
    }
    anyhow::bail!(
        "{}: no private key kube-apiserver can sign with: {}",
        path.display(),
        notes.join("; ")
    )
}
