//! The PEM/key reader: any bytes as a `--service-account-key-file` and as a
//! `--service-account-signing-key-file`.
//! Properties: no panic; every key accepted re-encodes (PKIX PEM, PKCS#8 PEM)
//! to text that reads back as the same key with the same kid; a signing key's
//! public half reads back from its own PEM.
#![no_main]

use std::path::Path;

use irsa_agent::keys::{parse_public_keys, pem_certificates, read_key_file, PrivateKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/key.pem");
    let _ = pem_certificates(data);
    if let Ok(file) = read_key_file(data, path) {
        assert!(!file.keys.is_empty(), "Ok with no key");
        for note in &file.skipped {
            assert!(
                note.starts_with("/fuzz/key.pem: "),
                "a note names the file: {note}"
            );
        }
        for (i, k) in file.keys.iter().enumerate() {
            assert!(!file.keys[..i].contains(k), "duplicate key kept");
            let pem = k.to_pem();
            let again = parse_public_keys(pem.as_bytes(), path).expect("own PEM reads back");
            assert_eq!(again.as_slice(), std::slice::from_ref(k));
            assert_eq!(again[0].kid(), k.kid());
            assert!(matches!(k.alg(), "RS256" | "ES256" | "ES384" | "ES512"));
        }
        let all: String = file.keys.iter().map(|k| k.to_pem()).collect();
        assert_eq!(parse_public_keys(all.as_bytes(), path).unwrap(), file.keys);
    } else if let Err(e) = read_key_file(data, path) {
        assert!(
            e.to_string().contains("/fuzz/key.pem"),
            "error names the file: {e}"
        );
    }
    match PrivateKey::parse(data, path) {
        Ok(key) => {
            let public = key.public_key();
            let pkcs8 = key.to_pkcs8_pem();
            let again = PrivateKey::parse(pkcs8.as_bytes(), path).expect("own PKCS#8 reads back");
            assert_eq!(again.public_key(), public);
            let pubs = parse_public_keys(public.to_pem().as_bytes(), path).unwrap();
            assert_eq!(pubs, vec![public]);
        }
        Err(e) => assert!(
            e.to_string().contains("/fuzz/key.pem"),
            "error names the file: {e}"
        ),
    }
});
