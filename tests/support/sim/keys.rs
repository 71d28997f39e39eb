//! Key files as kube-apiserver reads them, for the simulator.
//!
//! Written from the upstream source, not from the crate under test:
//! - Go `encoding/pem` `Decode` (how blocks are found, which ones are skipped);
//! - client-go `util/keyutil/key.go` (kubernetes/kubernetes
//!   `staging/src/k8s.io/client-go/util/keyutil/key.go`):
//!   `ParsePublicKeysPEM` for `--service-account-key-file`,
//!   `ParsePrivateKeyPEM` for `--service-account-signing-key-file`;
//! - `pkg/serviceaccount/jwt.go` `keyIDFromPublicKey` (kid) and the signer
//!   choice (RSA -> RS256, P-256/384/521 -> ES256/384/512);
//! - `pkg/serviceaccount/openidmetadata.go` (JWK fields).
//!
//! What `ParsePublicKeysPEM` really does (worth knowing, it surprises people):
//! the PEM block *type is ignored*. Every block's bytes are tried, in this
//! order, as an RSA private key (PKCS#1, then PKCS#8 holding RSA), an RSA
//! public key (PKIX, or an X.509 certificate with an RSA key), an EC private
//! key (SEC1 only), an EC public key (PKIX, or a certificate with an EC key).
//! Anything else is skipped silently. So: a PKCS#1 `RSA PUBLIC KEY` block is
//! skipped, an **EC private key in PKCS#8 (`PRIVATE KEY`) is skipped** (Go's
//! `ParseECPrivateKey` reads SEC1 only), Ed25519 keys are skipped, and a file
//! with no usable block is an error ("data does not contain any valid RSA or
//! ECDSA public keys").
//!
//! Simplification: Go also reads P-224 EC keys; RustCrypto has no P-224 here,
//! so the simulator skips them like an unsupported curve.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
const OID_P224: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.33");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

// ---------------------------------------------------------------------------
// PEM, the way Go's encoding/pem finds blocks
// ---------------------------------------------------------------------------

/// One PEM block: its type (`RSA PRIVATE KEY`, ...) and decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub bytes: Vec<u8>,
}

/// Go's `pem.Decode` called in a loop: every well-formed block, in order.
/// A block that starts like PEM but is malformed (no matching END line, bad
/// base64, junk after the END line) is skipped and the search continues after
/// its BEGIN line, as Go does. Headers (`Proc-Type: ...`) are parsed away, so
/// an encrypted legacy block yields its ciphertext (which then parses as no key).
pub fn pem_blocks(data: &[u8]) -> Vec<PemBlock> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((block, next)) = pem_decode(rest) {
        if let Some(b) = block {
            out.push(b);
        }
        rest = next;
    }
    out
}

const PEM_START: &[u8] = b"\n-----BEGIN ";
const PEM_END: &[u8] = b"\n-----END ";
const PEM_END_OF_LINE: &[u8] = b"-----";

/// Go's `getLine`: up to the next `\n`, trailing spaces/tabs/`\r` trimmed.
fn get_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (line, rest) = match data.iter().position(|&c| c == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    (&line[..end], rest)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One step of Go's `pem.Decode`: `None` when no BEGIN line is left;
/// `Some((None, rest))` for a rejected block (search continues at `rest`).
fn pem_decode(data: &[u8]) -> Option<(Option<PemBlock>, &[u8])> {
    let mut rest = if data.starts_with(&PEM_START[1..]) {
        &data[PEM_START.len() - 1..]
    } else {
        let i = find(data, PEM_START)?;
        &data[i + PEM_START.len()..]
    };
    let (type_line, after) = get_line(rest);
    if !type_line.ends_with(PEM_END_OF_LINE) {
        return Some((None, after));
    }
    let label = &type_line[..type_line.len() - PEM_END_OF_LINE.len()];
    rest = after;
    // Headers: `Key: Value` lines right after the BEGIN line.
    loop {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = get_line(rest);
        if !line.contains(&b':') {
            break;
        }
        rest = next;
    }
    let (end_index, end_trailer_index) = if rest.starts_with(&PEM_END[1..]) {
        (0, PEM_END.len() - 1)
    } else {
        match find(rest, PEM_END) {
            Some(i) => (i, i + PEM_END.len()),
            None => return Some((None, rest)),
        }
    };
    let end_trailer = &rest[end_trailer_index..];
    let trailer_len = label.len() + PEM_END_OF_LINE.len();
    if end_trailer.len() < trailer_len {
        return Some((None, rest));
    }
    let (trailer, rest_of_end_line) = end_trailer.split_at(trailer_len);
    if !trailer.starts_with(label) || !trailer.ends_with(PEM_END_OF_LINE) {
        return Some((None, rest));
    }
    let (s, next) = get_line(rest_of_end_line);
    if !s.is_empty() {
        return Some((None, rest));
    }
    let b64: Vec<u8> = rest[..end_index]
        .iter()
        .copied()
        .filter(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .collect();
    // Go's StdEncoding: padding required, non-zero trailing bits tolerated.
    const GO_STD: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    match GO_STD.decode(&b64) {
        Ok(bytes) => Some((
            Some(PemBlock {
                label: String::from_utf8_lossy(label).into_owned(),
                bytes,
            }),
            next,
        )),
        Err(_) => Some((None, rest)),
    }
}

// ---------------------------------------------------------------------------
// Public keys
// ---------------------------------------------------------------------------

/// A service-account verification key (what one `--service-account-key-file`
/// block yields).
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    P521(p521::PublicKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.alg(), self.kid())
    }
}

impl PublicKey {
    /// The PKIX (SubjectPublicKeyInfo) DER, as Go's `x509.MarshalPKIXPublicKey`.
    pub fn pkix_der(&self) -> Vec<u8> {
        let doc = match self {
            PublicKey::Rsa(k) => k.to_public_key_der(),
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::P384(k) => k.to_public_key_der(),
            PublicKey::P521(k) => k.to_public_key_der(),
        };
        doc.expect("encoding a public key").as_bytes().to_vec()
    }

    /// `keyIDFromPublicKey`: base64url (no padding) of SHA-256 of the PKIX DER.
    pub fn kid(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.pkix_der()))
    }

    /// The JWS algorithm kube-apiserver uses with this key.
    pub fn alg(&self) -> &'static str {
        match self {
            PublicKey::Rsa(_) => "RS256",
            PublicKey::P256(_) => "ES256",
            PublicKey::P384(_) => "ES384",
            PublicKey::P521(_) => "ES512",
        }
    }

    /// One JWKS entry, fields in go-jose's order (`use`, `kty`, `kid`, `crv`,
    /// `alg`, `n`/`e` or `x`/`y`), EC coordinates padded to the curve size.
    pub fn jwk_json(&self) -> String {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let kid = self.kid();
        let alg = self.alg();
        match self {
            PublicKey::Rsa(k) => format!(
                r#"{{"use":"sig","kty":"RSA","kid":"{kid}","alg":"{alg}","n":"{}","e":"{}"}}"#,
                b(&k.n().to_bytes_be()),
                b(&k.e().to_bytes_be())
            ),
            PublicKey::P256(k) => {
                let p = k.to_encoded_point(false);
                ec_jwk(&kid, "P-256", alg, p.x().unwrap(), p.y().unwrap())
            }
            PublicKey::P384(k) => {
                let p = k.to_encoded_point(false);
                ec_jwk(&kid, "P-384", alg, p.x().unwrap(), p.y().unwrap())
            }
            PublicKey::P521(k) => {
                let p = k.to_encoded_point(false);
                ec_jwk(&kid, "P-521", alg, p.x().unwrap(), p.y().unwrap())
            }
        }
    }

    /// Verify a JWS signature (`alg` from the token header; it must be the
    /// key's algorithm). ES* signatures are the raw `r || s` form.
    pub fn verify(&self, alg: &str, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier;
        if alg != self.alg() {
            return false;
        }
        match self {
            PublicKey::Rsa(k) => {
                let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k.clone());
                rsa::pkcs1v15::Signature::try_from(signature)
                    .is_ok_and(|s| vk.verify(message, &s).is_ok())
            }
            PublicKey::P256(k) => p256::ecdsa::Signature::from_slice(signature).is_ok_and(|s| {
                p256::ecdsa::VerifyingKey::from(k)
                    .verify(message, &s)
                    .is_ok()
            }),
            PublicKey::P384(k) => p384::ecdsa::Signature::from_slice(signature).is_ok_and(|s| {
                p384::ecdsa::VerifyingKey::from(k)
                    .verify(message, &s)
                    .is_ok()
            }),
            PublicKey::P521(k) => p521::ecdsa::Signature::from_slice(signature).is_ok_and(|s| {
                p521::ecdsa::VerifyingKey::from_encoded_point(&k.to_encoded_point(false))
                    .is_ok_and(|vk| vk.verify(message, &s).is_ok())
            }),
        }
    }
}

fn ec_jwk(kid: &str, crv: &str, alg: &str, x: &[u8], y: &[u8]) -> String {
    format!(
        r#"{{"use":"sig","kty":"EC","kid":"{kid}","crv":"{crv}","alg":"{alg}","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(x),
        URL_SAFE_NO_PAD.encode(y)
    )
}

/// client-go `keyutil.ParsePublicKeysPEM`: every usable key in the file, in
/// block order (see the module comment for which blocks count).
pub fn parse_public_keys_pem(data: &[u8]) -> Result<Vec<PublicKey>, String> {
    let mut keys = Vec::new();
    for block in pem_blocks(data) {
        let der = &block.bytes;
        if let Some(k) = rsa_private(der) {
            keys.push(PublicKey::Rsa(k.to_public_key()));
        } else if let Some(k) = rsa_public(der) {
            keys.push(PublicKey::Rsa(k));
        } else if let Some(k) = ec_private_sec1(der).and_then(|k| k.ok()) {
            keys.push(k.public());
        } else if let Some(k) = ec_public(der) {
            keys.push(k);
        }
        // anything else: tolerated and skipped, as upstream
    }
    if keys.is_empty() {
        return Err("data does not contain any valid RSA or ECDSA public keys".into());
    }
    Ok(keys)
}

/// `parseRSAPrivateKey`: PKCS#1, else PKCS#8 holding an RSA key.
fn rsa_private(der: &[u8]) -> Option<rsa::RsaPrivateKey> {
    rsa::RsaPrivateKey::from_pkcs1_der(der)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_der(der))
        .ok()
}

/// The SubjectPublicKeyInfo DER of a PKIX public key, or of an X.509
/// certificate's key (`ParsePKIXPublicKey`, else `ParseCertificate`).
fn spki_der(der: &[u8]) -> Option<Vec<u8>> {
    if spki::SubjectPublicKeyInfoRef::from_der(der).is_ok() {
        return Some(der.to_vec());
    }
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    cert.tbs_certificate.subject_public_key_info.to_der().ok()
}

/// `parseRSAPublicKey`.
fn rsa_public(der: &[u8]) -> Option<rsa::RsaPublicKey> {
    rsa::RsaPublicKey::from_public_key_der(&spki_der(der)?).ok()
}

/// `parseECPublicKey`, for the curves the simulator has.
fn ec_public(der: &[u8]) -> Option<PublicKey> {
    let spki = spki_der(der)?;
    let info = spki::SubjectPublicKeyInfoRef::from_der(&spki).ok()?;
    if info.algorithm.oid != OID_EC {
        return None;
    }
    let curve: ObjectIdentifier = info.algorithm.parameters?.decode_as().ok()?;
    match curve {
        c if c == OID_P256 => p256::PublicKey::from_public_key_der(&spki)
            .ok()
            .map(PublicKey::P256),
        c if c == OID_P384 => p384::PublicKey::from_public_key_der(&spki)
            .ok()
            .map(PublicKey::P384),
        c if c == OID_P521 => p521::PublicKey::from_public_key_der(&spki)
            .ok()
            .map(PublicKey::P521),
        _ => None,
    }
}

/// Go `x509.ParseECPrivateKey` (SEC1 only; the curve must be named in the
/// key). `None`: not a SEC1 key Go could read; `Some(Err)`: read, but on a
/// curve the simulator cannot sign with (P-224).
fn ec_private_sec1(der: &[u8]) -> Option<Result<SigningKey, String>> {
    let key = sec1::EcPrivateKey::try_from(der).ok()?;
    let curve = key.parameters.and_then(|p| p.named_curve())?;
    ec_private_on(curve, der)
}

fn ec_private_on(curve: ObjectIdentifier, sec1_der: &[u8]) -> Option<Result<SigningKey, String>> {
    Some(Ok(match curve {
        c if c == OID_P256 => SigningKey::P256(p256::SecretKey::from_sec1_der(sec1_der).ok()?),
        c if c == OID_P384 => SigningKey::P384(p384::SecretKey::from_sec1_der(sec1_der).ok()?),
        c if c == OID_P521 => SigningKey::P521(p521::SecretKey::from_sec1_der(sec1_der).ok()?),
        c if c == OID_P224 => {
            return Some(Err(
                "unknown private key curve, must be 256, 384, or 521".into()
            ))
        }
        _ => return None,
    }))
}

// ---------------------------------------------------------------------------
// Signing keys
// ---------------------------------------------------------------------------

/// A service-account signing key the simulator can sign with.
#[derive(Clone)]
pub enum SigningKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?})", self.public())
    }
}

impl SigningKey {
    pub fn public(&self) -> PublicKey {
        match self {
            SigningKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            SigningKey::P256(k) => PublicKey::P256(k.public_key()),
            SigningKey::P384(k) => PublicKey::P384(k.public_key()),
            SigningKey::P521(k) => PublicKey::P521(k.public_key()),
        }
    }

    pub fn alg(&self) -> &'static str {
        self.public().alg()
    }

    /// A JWS signature over `message` (RS256: PKCS#1 v1.5 + SHA-256; ES*: raw
    /// `r || s` with the curve's hash).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
        match self {
            SigningKey::Rsa(k) => rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone())
                .sign(message)
                .to_vec(),
            SigningKey::P256(k) => {
                let s: p256::ecdsa::Signature =
                    p256::ecdsa::SigningKey::from(k.clone()).sign(message);
                s.to_bytes().to_vec()
            }
            SigningKey::P384(k) => {
                let s: p384::ecdsa::Signature =
                    p384::ecdsa::SigningKey::from(k.clone()).sign(message);
                s.to_bytes().to_vec()
            }
            SigningKey::P521(k) => {
                let sk = p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
                    .expect("a P-521 secret key is a valid signing key");
                let s: p521::ecdsa::Signature = sk.sign_with_rng(&mut rand_core::OsRng, message);
                s.to_bytes().to_vec()
            }
        }
    }
}

/// What `keyutil.ParsePrivateKeyPEM` + `serviceaccount.JWTTokenGenerator`
/// make of a signing key file: a key to sign with, or the apiserver's error.
///
/// ParsePrivateKeyPEM looks at the block *type* (unlike the public-key
/// reader): `EC PRIVATE KEY` (SEC1), `RSA PRIVATE KEY` (PKCS#1), `PRIVATE KEY`
/// (unencrypted PKCS#8: RSA, EC, Ed25519, X25519), first one that parses
/// wins; other blocks (`EC PARAMETERS`, certificates, encrypted keys) are
/// skipped. Then the token generator accepts RSA and EC P-256/384/521 only.
pub fn parse_signing_key_pem(data: &[u8]) -> Result<SigningKey, SigningKeyError> {
    for block in pem_blocks(data) {
        let der = &block.bytes;
        let parsed: Option<Result<SigningKey, String>> = match block.label.as_str() {
            "EC PRIVATE KEY" => ec_private_sec1(der),
            "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(der)
                .ok()
                .map(|k| Ok(SigningKey::Rsa(Box::new(k)))),
            "PRIVATE KEY" => pkcs8_private(der),
            _ => None,
        };
        match parsed {
            Some(Ok(k)) => return Ok(k),
            Some(Err(e)) => return Err(SigningKeyError::Generator(e)),
            None => continue,
        }
    }
    Err(SigningKeyError::Parse(
        "data does not contain a valid RSA or ECDSA private key".into(),
    ))
}

/// Why a signing key file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKeyError {
    /// keyutil found no private key (`failed to parse service-account-issuer-key-file: ...`).
    Parse(String),
    /// A private key of a kind the token generator refuses (`failed to build token generator: ...`).
    Generator(String),
}

/// Go `x509.ParsePKCS8PrivateKey` (unencrypted), for the key kinds it knows.
fn pkcs8_private(der: &[u8]) -> Option<Result<SigningKey, String>> {
    let info = pkcs8::PrivateKeyInfo::try_from(der).ok()?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA {
        return rsa::RsaPrivateKey::from_pkcs8_der(der)
            .ok()
            .map(|k| Ok(SigningKey::Rsa(Box::new(k))));
    }
    if oid == OID_EC {
        let curve: ObjectIdentifier = info.algorithm.parameters?.decode_as().ok()?;
        // The inner key is SEC1, usually without its own curve parameters.
        return ec_private_on(curve, info.private_key);
    }
    if oid == OID_ED25519 {
        return Some(Err(
            "unknown private key type ed25519.PrivateKey, must be *rsa.PrivateKey, *ecdsa.PrivateKey, or jose.OpaqueSigner"
                .into(),
        ));
    }
    if oid == OID_X25519 {
        return Some(Err(
            "unknown private key type *ecdh.PrivateKey, must be *rsa.PrivateKey, *ecdsa.PrivateKey, or jose.OpaqueSigner"
                .into(),
        ));
    }
    None
}
