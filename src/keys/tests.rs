//! Unit tests against key material generated once with openssl (see
//! tests/fixtures/keys/README.md).

use std::path::Path;

use super::discovery::{discovery_document, published_files};
use super::jwk::jwks;
use super::*;
use crate::cli::JwksLayout;
use crate::issuer::Issuer;

macro_rules! fixture {
    ($name:literal) => {
        (
            &include_bytes!(concat!("../../tests/fixtures/keys/", $name))[..],
            Path::new($name),
        )
    };
}

fn one(data: (&[u8], &Path)) -> PublicKey {
    let keys = parse_public_keys(data.0, data.1).unwrap();
    assert_eq!(keys.len(), 1, "{}", data.1.display());
    keys.into_iter().next().unwrap()
}

fn err(data: (&[u8], &Path)) -> String {
    let e = read_key_file(data.0, data.1).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", data.1.display())), "{e}");
    assert!(!e.contains('\n'), "{e}");
    e
}

// Expected key ids computed independently with openssl:
//   openssl pkey -pubin -in tests/fixtures/keys/X-pub.pem -outform DER \
//     | openssl dgst -sha256 -binary | basenc --base64url | tr -d '='
const KID_RSA: &str = "nY_WL9sGOgReG0lpBM3owkscZt1oBHzWl-BG15fAvFo";
const KID_EC256: &str = "Xj0_wzC1_0kh7cciM2cxDFr_DQG_AzILsQpuq0RYIZo";
const KID_EC384: &str = "lfAyPp9z6gq633yRmI0WT1sI98D25YHd4tLVtXiMdr4";
const KID_EC521: &str = "KN2VmKXoCa1B4tgl9E2xmmnYeSiW0LbxNm7uA2LBXHU";

#[test]
fn kid_equals_openssl_sha256_of_pkix_der() {
    assert_eq!(one(fixture!("rsa-pub.pem")).kid(), KID_RSA);
    assert_eq!(one(fixture!("ec256-pub.pem")).kid(), KID_EC256);
    assert_eq!(one(fixture!("ec384-pub.pem")).kid(), KID_EC384);
    assert_eq!(one(fixture!("ec521-pub.pem")).kid(), KID_EC521);
}

#[test]
fn algorithms_follow_the_apiserver() {
    assert_eq!(one(fixture!("rsa-pub.pem")).alg(), "RS256");
    assert_eq!(one(fixture!("ec256-pub.pem")).alg(), "ES256");
    assert_eq!(one(fixture!("ec384-pub.pem")).alg(), "ES384");
    assert_eq!(one(fixture!("ec521-pub.pem")).alg(), "ES512");
}

#[test]
fn every_pem_form_of_a_key_file_yields_the_same_key() {
    let rsa = one(fixture!("rsa-pub.pem"));
    for f in [
        fixture!("rsa-pkcs1.pem"),
        fixture!("rsa-pkcs8.pem"),
        fixture!("rsa-cert.pem"),
    ] {
        assert_eq!(one(f), rsa, "{}", f.1.display());
    }
    assert_eq!(
        one(fixture!("ec256-sec1.pem")),
        one(fixture!("ec256-pub.pem"))
    );
    assert_eq!(
        one(fixture!("ec384-sec1.pem")),
        one(fixture!("ec384-pub.pem"))
    );
    assert_eq!(
        one(fixture!("ec521-sec1.pem")),
        one(fixture!("ec521-pub.pem"))
    );
}

#[test]
fn to_pem_is_byte_identical_to_openssl_pkix_output() {
    // Proves the DER we hash is the canonical one openssl (and Go) write.
    let (data, _) = fixture!("rsa-pub.pem");
    assert_eq!(one(fixture!("rsa-pkcs1.pem")).to_pem().as_bytes(), data);
    let (data, _) = fixture!("ec384-pub.pem");
    assert_eq!(one(fixture!("ec384-sec1.pem")).to_pem().as_bytes(), data);
}

#[test]
fn multi_block_file_keeps_order_and_drops_duplicates() {
    // multi.pem: comment, EC PARAMETERS, rsa PUBLIC KEY, P-384 PUBLIC KEY,
    // and the same rsa key again as RSA PRIVATE KEY.
    let (data, path) = fixture!("multi.pem");
    let file = read_key_file(data, path).unwrap();
    let kids: Vec<_> = file.keys.iter().map(PublicKey::kid).collect();
    assert_eq!(kids, [KID_RSA, KID_EC384]);
    assert_eq!(file.skipped.len(), 1, "{:?}", file.skipped);
    assert!(file.skipped[0].contains("block 4 (RSA PRIVATE KEY): duplicate"));
}

#[test]
fn pkcs1_rsa_public_key_is_skipped_like_the_apiserver() {
    let e = err(fixture!("rsa-pkcs1-pub.pem"));
    assert!(e.contains("PKCS#1 RSA public key"), "{e}");
    let mut both = fixture!("rsa-pkcs1-pub.pem").0.to_vec();
    both.extend_from_slice(fixture!("ec256-pub.pem").0);
    let file = read_key_file(&both, Path::new("both.pem")).unwrap();
    assert_eq!(file.keys.len(), 1);
    assert_eq!(file.keys[0].kid(), KID_EC256);
    assert!(file.skipped[0].starts_with("both.pem: block 1 (RSA PUBLIC KEY): PKCS#1"));
}

#[test]
fn ec_pkcs8_private_key_is_not_a_key_file_but_signs() {
    let e = err(fixture!("ec256-pkcs8.pem"));
    assert!(e.contains("PKCS#8"), "{e}");
    let (data, path) = fixture!("ec256-pkcs8.pem");
    let k = PrivateKey::parse(data, path).unwrap();
    assert_eq!(k.public_key().kid(), KID_EC256);
}

#[test]
fn bad_key_files_say_why_in_one_line_naming_the_file() {
    assert!(err(fixture!("rsa-encrypted.pem")).contains("cannot read encrypted keys"));
    assert!(err(fixture!("rsa-encrypted-legacy.pem")).contains("cannot read encrypted keys"));
    assert!(err(fixture!("secp256k1-pub.pem")).contains("unsupported elliptic curve secp256k1"));
    assert!(err(fixture!("secp256k1-sec1.pem")).contains("unsupported elliptic curve secp256k1"));
    assert!(err(fixture!("ed25519-pub.pem")).contains("Ed25519"));
    assert!(err(fixture!("not-a-key.txt")).contains("not a PEM key file"));
}

#[test]
fn signing_keys_parse_in_every_form_the_apiserver_reads() {
    let cases = [
        (fixture!("rsa-pkcs1.pem"), KID_RSA),
        (fixture!("rsa-pkcs8.pem"), KID_RSA),
        (fixture!("ec256-sec1.pem"), KID_EC256),
        (fixture!("ec256-pkcs8.pem"), KID_EC256),
        (fixture!("ec384-sec1.pem"), KID_EC384),
        (fixture!("ec521-sec1.pem"), KID_EC521),
        // EC PARAMETERS first, then a key: the first private key wins.
        (fixture!("multi.pem"), KID_RSA),
    ];
    for ((data, path), kid) in cases {
        let k = PrivateKey::parse(data, path).unwrap();
        assert_eq!(k.public_key().kid(), kid, "{}", path.display());
        // PKCS#8 round trip keeps the key.
        let again = PrivateKey::parse(k.to_pkcs8_pem().as_bytes(), path).unwrap();
        assert_eq!(again.public_key(), k.public_key());
    }
}

#[test]
fn signing_key_errors_name_the_file() {
    for (data, path, want) in [
        (
            fixture!("rsa-pub.pem").0,
            "rsa-pub.pem",
            "not a private key",
        ),
        (
            fixture!("rsa-encrypted.pem").0,
            "rsa-encrypted.pem",
            "encrypted",
        ),
        (fixture!("ed25519.pem").0, "ed25519.pem", "Ed25519"),
        (
            fixture!("secp256k1-sec1.pem").0,
            "secp256k1-sec1.pem",
            "secp256k1",
        ),
        (fixture!("not-a-key.txt").0, "not-a-key.txt", "not a PEM"),
    ] {
        let e = PrivateKey::parse(data, Path::new(path))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{path}: ")), "{e}");
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn private_key_debug_shows_no_material() {
    let (data, path) = fixture!("rsa-pkcs8.pem");
    let k = PrivateKey::parse(data, path).unwrap();
    let dbg = format!("{k:?}");
    assert!(dbg.contains(KID_RSA), "{dbg}");
    assert!(dbg.len() < 120, "{dbg}");
}

#[test]
fn generated_keys_round_trip() {
    for kind in [KeyType::EcP256, KeyType::Rsa2048] {
        let k = PrivateKey::generate(kind).unwrap();
        let pem = k.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = PrivateKey::parse(pem.as_bytes(), Path::new("gen")).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        let public = one((k.public_key().to_pem().as_bytes(), Path::new("gen.pub")));
        assert_eq!(public, k.public_key());
    }
}

#[test]
fn jwk_fields_match_the_apiserver() {
    let rsa = one(fixture!("rsa-pub.pem")).to_jwk();
    assert_eq!((rsa.kty, rsa.alg, rsa.use_), ("RSA", "RS256", "sig"));
    assert_eq!(rsa.e.as_deref(), Some("AQAB"));
    // 2048-bit modulus: 256 bytes, 342 base64url characters, no padding.
    assert_eq!(rsa.n.as_ref().unwrap().len(), 342);
    let ec = one(fixture!("ec521-pub.pem")).to_jwk();
    assert_eq!((ec.kty, ec.crv, ec.alg), ("EC", Some("P-521"), "ES512"));
    // Coordinates padded to 66 bytes: 88 characters.
    assert_eq!(ec.x.as_ref().unwrap().len(), 88);
    assert_eq!(ec.y.as_ref().unwrap().len(), 88);
    let text = serde_json::to_string(&jwks(&[one(fixture!("ec256-pub.pem"))])).unwrap();
    assert!(
        text.starts_with(&format!(
            r#"{{"keys":[{{"use":"sig","kty":"EC","kid":"{KID_EC256}","crv":"P-256","alg":"ES256","x":"#
        )),
        "{text}"
    );
}

#[test]
fn discovery_document_urls_and_algorithms() {
    let keys = [
        one(fixture!("rsa-pub.pem")),
        one(fixture!("ec256-pub.pem")),
        one(fixture!("rsa-cert.pem")),
    ];
    let issuer = Issuer::parse("https://oidc.example.com/c1/", false).unwrap();
    let doc = discovery_document(&issuer, JwksLayout::Kube, &keys);
    assert_eq!(doc.issuer, "https://oidc.example.com/c1/");
    assert_eq!(doc.jwks_uri, "https://oidc.example.com/c1/openid/v1/jwks");
    assert_eq!(
        doc.id_token_signing_alg_values_supported,
        ["ES256", "RS256"]
    );
    let doc = discovery_document(&issuer, JwksLayout::KeysJson, &keys);
    assert_eq!(doc.jwks_uri, "https://oidc.example.com/c1/keys.json");
    let files = published_files(&issuer, JwksLayout::Kube, &keys);
    assert_eq!(
        files[0].url,
        "https://oidc.example.com/c1/.well-known/openid-configuration"
    );
    assert!(files.iter().all(|f| f.contents.ends_with("}\n")));
}
