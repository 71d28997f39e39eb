//! What a kube-apiserver start decides, given its argv and the node's files:
//! refuse (with upstream's message) or run with these issuers, keys and
//! audiences. Pure apart from reading the key files.
//!
//! Upstream (kubernetes/kubernetes): `pkg/controlplane/apiserver/options/options.go`
//! `Complete` (tls-private-key-file fallback, signing key parse + token
//! generator), `pkg/kubeapiserver/options/authentication.go` `Validate`
//! (issuer URL/empty/duplicate, key files required, jwks-uri https) and
//! `ToAuthenticationConfig` (key files read with `keyutil.PublicKeysFromFile`),
//! `pkg/serviceaccount/openidmetadata.go` (when discovery is served).
//!
//! One check is the simulator's own and NOT upstream: a signing key whose
//! public half is in none of the key files is refused (upstream starts, and
//! then no token it issues authenticates). `Cluster::set_strict_signing_key_check(false)`
//! turns it off.

use std::path::{Path, PathBuf};

use super::super::effective::{sa_settings, SaSettings};
use super::keys::{self, PublicKey, SigningKey, SigningKeyError};

/// How the apiserver process sees the node's files.
pub struct FileView<'a> {
    /// The sysroot.
    pub root: &'a Path,
    /// Static pods: `(container path, host path)` of every hostPath mount of
    /// the kube-apiserver container; a path under none of them does not exist
    /// for the apiserver. `None`: the process sees the node's files directly.
    pub mounts: Option<Vec<(String, String)>>,
    /// Node path prefixes the apiserver may not read (`Fault::UnreadablePrefix`).
    pub unreadable: &'a [String],
}

impl FileView<'_> {
    /// The node path (under the sysroot) behind a path as the apiserver sees it.
    pub fn host_path(&self, path: &str) -> Option<String> {
        let Some(mounts) = &self.mounts else {
            return Some(path.to_string());
        };
        mounts
            .iter()
            .filter(|(m, _)| {
                let m = m.trim_end_matches('/');
                path == m || path.starts_with(&format!("{m}/"))
            })
            .max_by_key(|(m, _)| m.len())
            .map(|(m, h)| {
                let rest = &path[m.trim_end_matches('/').len()..];
                format!("{}{rest}", h.trim_end_matches('/'))
            })
    }

    /// Go's `os.ReadFile(path)` inside the apiserver; errors as Go prints them.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        let Some(host) = self.host_path(path) else {
            return Err(format!("open {path}: no such file or directory"));
        };
        if self.unreadable.iter().any(|p| host.starts_with(p.as_str())) {
            return Err(format!("open {path}: permission denied"));
        }
        let full: PathBuf = self.root.join(host.trim_start_matches('/'));
        std::fs::read(&full).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("open {path}: no such file or directory"),
            std::io::ErrorKind::PermissionDenied => format!("open {path}: permission denied"),
            std::io::ErrorKind::IsADirectory => format!("read {path}: is a directory"),
            _ => format!("open {path}: {e}"),
        })
    }
}

/// The hostPath mounts of the `kube-apiserver` container of a static-pod
/// manifest: `(mountPath, hostPath.path)`.
pub fn static_pod_mounts(manifest: &str) -> anyhow::Result<Vec<(String, String)>> {
    use serde_norway::Value;
    let pod: Value = serde_norway::from_str(manifest)?;
    let spec = pod.get("spec");
    let host_paths: Vec<(String, String)> = spec
        .and_then(|s| s.get("volumes"))
        .and_then(Value::as_sequence)
        .map(|vols| {
            vols.iter()
                .filter_map(|v| {
                    let name = v.get("name")?.as_str()?;
                    let path = v.get("hostPath")?.get("path")?.as_str()?;
                    Some((name.to_string(), path.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let container = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some("kube-apiserver"))
        });
    let mounts = container
        .and_then(|c| c.get("volumeMounts"))
        .and_then(Value::as_sequence)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    let name = m.get("name")?.as_str()?;
                    let mount_path = m.get("mountPath")?.as_str()?;
                    let host = host_paths.iter().find(|(n, _)| n == name)?;
                    Some((mount_path.to_string(), host.1.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(mounts)
}

/// The last value of `--name` in an argv (`--name=v` or `--name v`).
pub fn last_flag(args: &[String], name: &str) -> Option<String> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].replace('_', "-");
        i += 1;
        let Some(body) = a.strip_prefix("--") else {
            continue;
        };
        if let Some(v) = body.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_string());
        } else if body == name {
            if let Some(v) = args.get(i).filter(|v| !v.starts_with('-')) {
                found = Some(v.clone());
                i += 1;
            }
        }
    }
    found
}

/// An accepted start.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub settings: SaSettings,
    /// The key files actually used (after the tls-private-key-file fallback).
    pub key_files: Vec<String>,
    /// Every key from every key file, in order.
    pub keys: Vec<PublicKey>,
    /// `None`: no signing key file; the apiserver runs but cannot issue tokens.
    pub signer: Option<SigningKey>,
    /// `(openid-configuration, jwks)` when discovery is served.
    pub discovery: Option<(String, String)>,
}

/// Decide a start. `Err` is the message kube-apiserver would exit with.
pub fn evaluate(
    args: &[String],
    files: &FileView<'_>,
    strict_signing_key_check: bool,
) -> Result<Accepted, String> {
    let settings = sa_settings(args).map_err(|e| format!("{e:#}"))?;
    for iss in &settings.issuers {
        if iss.contains(':') {
            if let Err(e) = go_url_parse(iss) {
                return Err(format!(
                    "service-account-issuer {iss:?} contained a ':' but was not a valid URL: {e}"
                ));
            }
        }
    }
    let jwks_uri = last_flag(args, "service-account-jwks-uri").filter(|u| !u.is_empty());
    if let Some(u) = &jwks_uri {
        match go_url_parse(u) {
            Err(e) => return Err(format!("service-account-jwks-uri must be a valid URL: {e}")),
            Ok(p) if p.scheme != "https" => {
                return Err(format!(
                    "service-account-jwks-uri requires https scheme, parsed as: {u}"
                ))
            }
            Ok(_) => {}
        }
    }

    // Complete(): with no signing key and no key files, fall back to the
    // serving key if it reads as a public key.
    let signing_file = settings.signing_key_file.clone().filter(|f| !f.is_empty());
    let mut key_files = settings.key_files.clone();
    if signing_file.is_none() && key_files.is_empty() {
        if let Some(tls) = last_flag(args, "tls-private-key-file").filter(|f| !f.is_empty()) {
            if files
                .read(&tls)
                .is_ok_and(|d| keys::parse_public_keys_pem(&d).is_ok())
            {
                key_files = vec![tls];
            }
        }
    }

    // Complete(): the signing key and the token generator.
    let signer = match &signing_file {
        None => None,
        Some(f) => {
            let data = files
                .read(f)
                .map_err(|e| format!("failed to parse service-account-issuer-key-file: {e}"))?;
            match keys::parse_signing_key_pem(&data) {
                Ok(k) => Some(k),
                Err(SigningKeyError::Parse(e)) => {
                    return Err(format!(
                        "failed to parse service-account-issuer-key-file: error reading private key file {f}: {e}"
                    ))
                }
                Err(SigningKeyError::Generator(e)) => {
                    return Err(format!("failed to build token generator: {e}"))
                }
            }
        }
    };

    // Validate()
    if key_files.is_empty() {
        return Err(
            "either `--service-account-key-file` or `--service-account-signing-endpoint` must be set"
                .into(),
        );
    }

    // ToAuthenticationConfig(): every key file must yield keys.
    let mut keys = Vec::new();
    for f in &key_files {
        let data = files.read(f)?;
        let found = keys::parse_public_keys_pem(&data)
            .map_err(|e| format!("error reading public key file {f}: {e}"))?;
        keys.extend(found);
    }

    if let (Some(sk), Some(f)) = (&signer, &signing_file) {
        let public = sk.public().pkix_der();
        if strict_signing_key_check && !keys.iter().any(|k| k.pkix_der() == public) {
            return Err(format!(
                "(simulator check, not upstream) the public half of --service-account-signing-key-file={f} \
                 (kid {}) is in none of the --service-account-key-file files {key_files:?}: \
                 no token it signs could be verified",
                sk.public().kid()
            ));
        }
    }

    let discovery = discovery_documents(&settings.issuers[0], jwks_uri, args, &keys);
    Ok(Accepted {
        settings,
        key_files,
        keys,
        signer,
        discovery,
    })
}

/// `/.well-known/openid-configuration` and `/openid/v1/jwks`, when upstream
/// serves them: the first issuer is an https URL without query or fragment.
/// `jwks_uri` defaults to `https://<external address>/openid/v1/jwks`, the
/// external address being `--external-hostname` or `--advertise-address`
/// (else 127.0.0.1) and `--secure-port` (else 6443) of the argv.
fn discovery_documents(
    issuer: &str,
    jwks_uri: Option<String>,
    args: &[String],
    keys: &[PublicKey],
) -> Option<(String, String)> {
    let u = go_url_parse(issuer).ok()?;
    if u.scheme != "https" || u.has_query || u.has_fragment || keys.is_empty() {
        return None;
    }
    let jwks_uri = jwks_uri.unwrap_or_else(|| {
        let host = last_flag(args, "external-hostname")
            .or_else(|| last_flag(args, "advertise-address"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = last_flag(args, "secure-port").unwrap_or_else(|| "6443".into());
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        format!("https://{host}:{port}/openid/v1/jwks")
    });
    let mut algs: Vec<&str> = keys.iter().map(PublicKey::alg).collect();
    algs.sort();
    algs.dedup();
    // Field order as upstream's struct (encoding/json keeps it).
    let config = format!(
        r#"{{"issuer":{},"jwks_uri":{},"response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":{}}}"#,
        serde_json::Value::from(issuer),
        serde_json::Value::from(jwks_uri),
        serde_json::Value::from(algs)
    );
    let jwks = format!(
        r#"{{"keys":[{}]}}"#,
        keys.iter()
            .map(PublicKey::jwk_json)
            .collect::<Vec<_>>()
            .join(",")
    );
    Some((config, jwks))
}

/// The parts of Go's `url.Parse` result the apiserver looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoUrl {
    pub scheme: String,
    pub host: String,
    pub has_query: bool,
    pub has_fragment: bool,
}

/// A port of the error cases of Go's `net/url.Parse` that an issuer string
/// can hit: control characters, a leading `:`, a colon in the first path
/// segment of a scheme-less reference, a non-numeric port, an unclosed IPv6
/// bracket, bad `%` escapes, characters not allowed in a host name.
/// Errors read like Go's: `parse "<url>": <reason>`.
pub fn go_url_parse(raw: &str) -> Result<GoUrl, String> {
    let err = |reason: String| format!("parse {raw:?}: {reason}");
    let (u, frag) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    let err_u = |reason: String| format!("parse {u:?}: {reason}");
    if u.bytes().any(|c| c < 0x20 || c == 0x7f) {
        return Err(err_u("net/url: invalid control character in URL".into()));
    }
    // getScheme
    let mut scheme = String::new();
    let mut rest = u;
    for (i, c) in u.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' => {
                if i == 0 {
                    return Err(err_u("missing protocol scheme".into()));
                }
                scheme = u[..i].to_ascii_lowercase();
                rest = &u[i + 1..];
                break;
            }
            _ => break,
        }
    }
    let (rest, query) = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        (&rest[..rest.len() - 1], None)
    } else {
        match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        }
    };
    let mut host = String::new();
    let mut path = rest;
    if !rest.starts_with('/') {
        if scheme.is_empty() {
            let segment = rest.split('/').next().unwrap_or("");
            if segment.contains(':') {
                return Err(err_u(
                    "first path segment in URL cannot contain colon".into(),
                ));
            }
        } else {
            // opaque (`urn:x`): nothing more is checked
            path = "";
        }
    } else if let Some(after) = rest.strip_prefix("//") {
        let (authority, p) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        path = p;
        let hostport = match authority.rfind('@') {
            Some(i) => &authority[i + 1..],
            None => authority,
        };
        host = go_parse_host(hostport).map_err(err_u)?;
    }
    go_unescape(path, false).map_err(err_u)?;
    if let Some(f) = frag {
        go_unescape(f, false).map_err(err)?;
    }
    Ok(GoUrl {
        scheme,
        host,
        has_query: query.is_some_and(|q| !q.is_empty()),
        has_fragment: frag.is_some_and(|f| !f.is_empty()),
    })
}

fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|c| c.is_ascii_digit()))
}

fn go_parse_host(host: &str) -> Result<String, String> {
    if host.starts_with('[') {
        let Some(i) = host.rfind(']') else {
            return Err("missing ']' in host".into());
        };
        let colon_port = &host[i + 1..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {colon_port:?} after host"));
        }
        return Ok(host.to_string());
    }
    if let Some(i) = host.rfind(':') {
        let colon_port = &host[i..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {colon_port:?} after host"));
        }
    }
    go_unescape(host, true)?;
    Ok(host.to_string())
}

/// `url.unescape` error cases (`encodePath`/`encodeFragment` or `encodeHost`).
fn go_unescape(s: &str, host_mode: bool) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                let end = (i + 3).min(b.len());
                return Err(format!("invalid URL escape {:?}", &s[i..end]));
            }
            if host_mode && hex_val(b[i + 1]) < 8 && &s[i..i + 3] != "%25" {
                return Err(format!("invalid URL escape {:?}", &s[i..i + 3]));
            }
            i += 3;
            continue;
        }
        if host_mode && b[i] < 0x80 && host_char_needs_escape(b[i]) {
            return Err(format!(
                "invalid character {:?} in host name",
                (b[i] as char).to_string()
            ));
        }
        i += 1;
    }
    Ok(())
}

fn hex_val(c: u8) -> u8 {
    (c as char).to_digit(16).unwrap_or(0) as u8
}

/// `shouldEscape(c, encodeHost)`.
fn host_char_needs_escape(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c))
}
