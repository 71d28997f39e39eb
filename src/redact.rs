//! Masking of secrets in text taken from users' files (k3s/RKE2 config.yaml
//! and drop-ins, args files, manifests, k0s.yaml, kubeconfigs) before it is
//! shown anywhere: diffs, human output, JSON, logs.
//!
//! Line by line, keeping the line count (diff hunks stay aligned):
//! - the VALUE of a key that holds a secret, in YAML (`token: v`, `- token: v`,
//!   `{token: v}`) or argument form (`--token=v`, `- "agent-token=v"`,
//!   `--token v`): `token`, `agent-token`, `password`, `client-key-data`,
//!   `client-secret`, and every key ending in `-token`, `-password`,
//!   `-secret`, `-secret-key` or `-key-data` (`_` counts as `-`, case and
//!   leading dashes and a trailing `+`/`-` merge operator are ignored);
//! - the password in a URL or DSN, whatever the key (`datastore-endpoint`,
//!   k0s `dataSource`, `etcd-servers`): `postgres://user:PASS@host`,
//!   `mysql://user:PASS@tcp(host:3306)/db`, and `password=PASS` in a
//!   key=value DSN;
//! - every line of a PEM block whose label names a private key, markers
//!   included, and a base64 blob that decodes to one;
//! - anything shaped like a JWT (`eyJ...` `.` `...`).
//!
//! [`file_text`] applies every rule; [`free_text`] (for messages and the
//! tool's own sentences, where "token:" is prose) only the content rules.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// What a masked value is replaced with.
pub const MASK: &str = "<redacted>";

/// Mask every secret in the text of a user's file.
pub fn file_text(text: &str) -> String {
    redact(text, true)
}

/// Mask the secrets recognisable by their content alone (private keys, URL
/// passwords, JWTs): for messages and sentences that may quote a file.
pub fn free_text(text: &str) -> String {
    redact(text, false)
}

/// Does `text` hold anything [`file_text`] would mask?
pub fn has_secret(text: &str) -> bool {
    file_text(text) != text
}

fn redact(text: &str, keys: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut state = State::Plain;
    for raw in text.split_inclusive('\n') {
        let (line, eol) = split_eol(raw);
        let indent = &line[..line.len() - line.trim_start().len()];
        match state {
            State::Pem => {
                out.push_str(indent);
                out.push_str(MASK);
                if line.contains("-----END ") {
                    state = State::Plain;
                }
            }
            State::Block(key_indent) if line.trim().is_empty() || indent.len() > key_indent => {
                if !line.trim().is_empty() {
                    out.push_str(indent);
                    out.push_str(MASK);
                }
            }
            _ => {
                state = State::Plain;
                if let Some(begin) = pem_private_begin(line) {
                    out.push_str(&line[..begin]);
                    out.push_str("<redacted private key>");
                    if !line[begin..].contains("-----END ") {
                        state = State::Pem;
                    }
                } else {
                    let (masked, block) = redact_line(line, keys);
                    if block {
                        state = State::Block(indent.len());
                    }
                    out.push_str(&masked);
                }
            }
        }
        out.push_str(eol);
    }
    out
}

#[derive(Clone, Copy)]
enum State {
    Plain,
    /// Inside a private key's PEM block.
    Pem,
    /// Inside a YAML block scalar (`token: |`) opened at this indentation.
    Block(usize),
}

fn split_eol(raw: &str) -> (&str, &str) {
    let body = raw.trim_end_matches(['\n', '\r']);
    (body, &raw[body.len()..])
}

/// The byte offset of `-----BEGIN ... PRIVATE KEY-----` in `line`.
fn pem_private_begin(line: &str) -> Option<usize> {
    let at = line.find("-----BEGIN ")?;
    let label_end = line[at + 11..].find("-----")? + at + 11;
    line[at..label_end].contains("PRIVATE KEY").then_some(at)
}

/// Is `key` (as written) the name of a setting whose value is a secret?
pub fn is_secret_key(key: &str) -> bool {
    let k = key
        .trim_start_matches('-')
        .trim_end_matches(['+', '-'])
        .to_ascii_lowercase()
        .replace('_', "-");
    const EXACT: [&str; 8] = [
        "token",
        "agent-token",
        "password",
        "passwd",
        "secret",
        "client-key-data",
        "client-secret",
        "private-key",
    ];
    const SUFFIX: [&str; 5] = ["-token", "-password", "-secret", "-secret-key", "-key-data"];
    // camelCase spellings (k0s, JSON): clientSecret, bootstrapToken.
    let dashed = camel_to_dashed(&k, key);
    [k.as_str(), dashed.as_str()]
        .iter()
        .any(|k| EXACT.contains(k) || SUFFIX.iter().any(|s| k.ends_with(s)))
}

fn camel_to_dashed(lower: &str, original: &str) -> String {
    let mut s = String::new();
    for c in original
        .trim_start_matches('-')
        .trim_end_matches(['+', '-'])
        .chars()
    {
        if c.is_ascii_uppercase() {
            s.push('-');
        }
        s.push(c.to_ascii_lowercase());
    }
    if s.is_empty() {
        lower.to_string()
    } else {
        s.replace('_', "-")
    }
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
}

/// Mask one line; also says whether a YAML block scalar with a secret
/// value starts here (its lines follow).
fn redact_line(line: &str, keys: bool) -> (String, bool) {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut block = false;
    if keys {
        key_values(line, &mut spans, &mut block);
    }
    url_passwords(line, &mut spans);
    jwts(line, &mut spans);
    private_key_blobs(line, &mut spans);
    spans.sort();
    let mut out = String::with_capacity(line.len());
    let mut at = 0;
    for (s, e) in spans {
        if e <= at {
            continue;
        }
        let s = s.max(at);
        out.push_str(&line[at..s]);
        out.push_str(MASK);
        at = e;
    }
    out.push_str(&line[at..]);
    (out, block)
}

/// The values of secret keys: `key: v`, `key=v`, `--key v`.
fn key_values(line: &str, spans: &mut Vec<(usize, usize)>, block: &mut bool) {
    let b = line.as_bytes();
    let flow = line.contains('{');
    let mut i = 0;
    while i < b.len() {
        if !is_key_char(b[i]) || (i > 0 && is_key_char(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_key_char(b[i]) {
            i += 1;
        }
        let mut key_end = i;
        // A merge operator (`token+:`) and the key's closing quote.
        let mut j = i;
        if j < b.len() && b[j] == b'+' {
            j += 1;
            key_end = j;
        }
        if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
            j += 1;
        }
        let key = &line[start..key_end];
        if !is_secret_key(key) {
            continue;
        }
        let dashed = key.starts_with("--");
        let sep = b.get(j).copied();
        let value_start = match sep {
            Some(b'=') => j + 1,
            Some(b':') if b.get(j + 1).is_none_or(|c| c.is_ascii_whitespace()) => {
                let mut v = j + 1;
                while v < b.len() && b[v] == b' ' {
                    v += 1;
                }
                v
            }
            Some(b' ') if dashed => j + 1,
            _ => continue,
        };
        let (vs, ve) = value_span(line, value_start, sep == Some(b':'), flow);
        if vs == ve {
            // `token: |` or `token: >-`: the value is the indented lines below.
            let rest = line[value_start..].trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                *block = true;
            }
            continue;
        }
        let v = &line[vs..ve];
        if v.starts_with('|') || v.starts_with('>') {
            *block = true;
            continue;
        }
        spans.push((vs, ve));
        i = ve;
    }
}

/// The value starting at `at`: inside quotes if quoted; YAML values run to a
/// comment (or a `,`/`}` in a flow mapping), argument values to a space,
/// quote or comma.
fn value_span(line: &str, at: usize, yaml: bool, flow: bool) -> (usize, usize) {
    let b = line.as_bytes();
    if at >= b.len() {
        return (at, at);
    }
    if b[at] == b'"' || b[at] == b'\'' {
        let q = b[at];
        let mut e = at + 1;
        while e < b.len() && b[e] != q {
            if b[e] == b'\\' && q == b'"' {
                e += 1;
            }
            e += 1;
        }
        return (at + 1, e.min(b.len()));
    }
    let mut e = at;
    while e < b.len() {
        let c = b[e];
        if yaml {
            if c == b'#' && e > at && b[e - 1] == b' ' {
                break;
            }
            if flow && (c == b',' || c == b'}') {
                break;
            }
        } else if c.is_ascii_whitespace() || c == b'"' || c == b'\'' || c == b',' {
            break;
        }
        e += 1;
    }
    let v = line[at..e].trim_end();
    (at, at + v.len())
}

/// `scheme://user:PASS@host`, `user:PASS@tcp(...)` and `password=PASS`.
fn url_passwords(line: &str, spans: &mut Vec<(usize, usize)>) {
    let b = line.as_bytes();
    let stop = |c: u8| c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b',' | b'/' | b'?');
    for (at, _) in line.match_indices("://") {
        let auth_start = at + 3;
        let mut e = auth_start;
        while e < b.len() && !stop(b[e]) {
            e += 1;
        }
        let auth = &line[auth_start..e];
        if let Some(amp) = auth.rfind('@') {
            if let Some(colon) = auth[..amp].find(':') {
                spans.push((auth_start + colon + 1, auth_start + amp));
            }
        }
    }
    // Go MySQL DSNs without a scheme: user:PASS@tcp(host)/db, @unix(...).
    for proto in ["@tcp(", "@unix("] {
        for (amp, _) in line.match_indices(proto) {
            let mut s = amp;
            while s > 0 && !stop(b[s - 1]) && b[s - 1] != b'=' && b[s - 1] != b' ' {
                s -= 1;
            }
            let userinfo = &line[s..amp];
            if userinfo.contains("://") {
                continue; // handled above
            }
            if let Some(colon) = userinfo.find(':') {
                spans.push((s + colon + 1, amp));
            }
        }
    }
    // key=value DSNs: host=db user=k3s password=PASS
    let lower = line.to_ascii_lowercase();
    for (at, _) in lower.match_indices("password=") {
        if at > 0 && is_key_char(b[at - 1]) {
            continue;
        }
        let vs = at + "password=".len();
        let (s, e) = value_span(line, vs, false, false);
        if s < e {
            spans.push((s, e));
        }
    }
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// `eyJ...` `.` `eyJ...` (and a signature): a JWS compact serialization.
fn jwts(line: &str, spans: &mut Vec<(usize, usize)>) {
    let b = line.as_bytes();
    for (at, _) in line.match_indices("eyJ") {
        if at > 0 && is_b64url(b[at - 1]) {
            continue;
        }
        let mut e = at;
        let mut dots = 0;
        loop {
            while e < b.len() && is_b64url(b[e]) {
                e += 1;
            }
            if e + 1 < b.len() && b[e] == b'.' && is_b64url(b[e + 1]) && dots < 2 {
                dots += 1;
                e += 1;
            } else {
                break;
            }
        }
        if dots >= 1 {
            spans.push((at, e));
        }
    }
}

/// Base64 runs that decode to a PEM private key (kubeconfig `*-data`
/// fields under any name).
fn private_key_blobs(line: &str, spans: &mut Vec<(usize, usize)>) {
    let b = line.as_bytes();
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=');
    let mut i = 0;
    while i < b.len() {
        if !is_b64(b[i]) {
            i += 1;
            continue;
        }
        let s = i;
        while i < b.len() && is_b64(b[i]) {
            i += 1;
        }
        if i - s >= 64 {
            if let Ok(bytes) = STANDARD.decode(&line[s..i]) {
                if String::from_utf8_lossy(&bytes).contains("PRIVATE KEY") {
                    spans.push((s, i));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_keys_of_k3s_and_rke2() {
        let text = "token: K10abc::server:s3cr3t\nagent-token: \"agent-s3cr3t\" # for agents\n\
                    write-kubeconfig-mode: \"0644\"\ntoken+: more\n";
        assert_eq!(
            file_text(text),
            "token: <redacted>\nagent-token: \"<redacted>\" # for agents\n\
             write-kubeconfig-mode: \"0644\"\ntoken+: <redacted>\n"
        );
    }

    #[test]
    fn datastore_passwords_in_urls_and_dsns() {
        for (line, want) in [
            (
                "datastore-endpoint: postgres://k3s:pg-s3cr3t@db.example.com:5432/k3s",
                "datastore-endpoint: postgres://k3s:<redacted>@db.example.com:5432/k3s",
            ),
            (
                "datastore-endpoint: \"mysql://k3s:my-s3cr3t@tcp(db:3306)/k3s\"",
                "datastore-endpoint: \"mysql://k3s:<redacted>@tcp(db:3306)/k3s\"",
            ),
            (
                "    dataSource: k3s:my-s3cr3t@tcp(db:3306)/k3s",
                "    dataSource: k3s:<redacted>@tcp(db:3306)/k3s",
            ),
            (
                "datastore-endpoint: \"host=db user=k3s password=pg-s3cr3t sslmode=disable\"",
                "datastore-endpoint: \"host=db user=k3s password=<redacted> sslmode=disable\"",
            ),
            (
                "  - \"etcd-servers=https://root:etcd-s3cr3t@10.0.0.1:2379\"",
                "  - \"etcd-servers=https://root:<redacted>@10.0.0.1:2379\"",
            ),
        ] {
            assert_eq!(file_text(line), want);
            assert_eq!(free_text(line), want, "by content alone");
        }
    }

    #[test]
    fn argument_forms() {
        for (line, want) in [
            ("--token=s3cr3t", "--token=<redacted>"),
            ("--agent-token s3cr3t", "--agent-token <redacted>"),
            ("  - \"token=s3cr3t\"", "  - \"token=<redacted>\""),
            (
                "  - --etcd-password=s3cr3t",
                "  - --etcd-password=<redacted>",
            ),
            (
                "    extraArgs: {oidc-client-secret: s3cr3t, v: \"2\"}",
                "    extraArgs: {oidc-client-secret: <redacted>, v: \"2\"}",
            ),
            (
                "--token-auth-file=/etc/tokens.csv --profiling=false",
                "--token-auth-file=/etc/tokens.csv --profiling=false",
            ),
        ] {
            assert_eq!(file_text(line), want);
        }
    }

    #[test]
    fn kubeconfig_credentials() {
        let kc = "users:\n- name: admin\n  user:\n    client-certificate-data: LS0tCERT\n    \
                  client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0t\n    token: abc.def\n    \
                  password: hunter2\n    username: admin\n";
        let got = file_text(kc);
        assert!(got.contains("client-key-data: <redacted>\n"), "{got}");
        assert!(got.contains("token: <redacted>\n"), "{got}");
        assert!(got.contains("password: <redacted>\n"), "{got}");
        assert!(got.contains("client-certificate-data: LS0tCERT\n"), "{got}");
        assert!(got.contains("username: admin\n"), "{got}");
        assert_eq!(got.lines().count(), kc.lines().count());
    }

    #[test]
    fn pem_private_keys_and_their_base64() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabcd\n-----END RSA PRIVATE KEY-----\n";
        let text =
            format!("a: 1\n{pem}-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n");
        let got = file_text(&text);
        assert_eq!(
            got,
            "a: 1\n<redacted private key>\n<redacted>\n<redacted>\n<redacted>\n\
             -----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
        );
        assert_eq!(free_text(&text), got);
        let blob = STANDARD.encode(pem);
        assert_eq!(
            free_text(&format!("tls.key: {blob}")),
            "tls.key: <redacted>"
        );
        // A block scalar under a secret key.
        assert_eq!(
            file_text("token: |\n  line1\n  line2\nnext: 1\n"),
            "token: |\n  <redacted>\n  <redacted>\nnext: 1\n"
        );
    }

    #[test]
    fn jwts_and_what_is_left_alone() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl";
        assert_eq!(free_text(&format!("t {jwt} x")), "t <redacted> x");
        for plain in [
            "old token:   still authenticates",
            "getting a token under the current configuration",
            "    - --service-account-signing-key-file=/etc/kubernetes/pki/sa.key",
            "    - --service-account-issuer=https://oidc.example.com/my-cluster",
            "--etcd-servers=\"unix://${SNAP_DATA}/var/kubernetes/backend/kine.sock:12379\"",
            "enable-bootstrap-token-auth: true",
        ] {
            assert_eq!(free_text(plain), plain);
            if !plain.starts_with("old token") {
                assert_eq!(file_text(plain), plain);
                assert!(!has_secret(plain));
            }
        }
    }
}
