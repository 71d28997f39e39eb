//! An independent reader: "with this sysroot, what argv would kube-apiserver
//! start with, and what service-account settings does that give?"
//!
//! Written from the upstream sources (see `tests/fixtures/README.md` for the
//! repo + path of each rule), NOT from the crate under test: nothing here
//! uses `irsa_agent`. Tests compare the crate's results against this reader,
//! so a shared misunderstanding is the only way both can be wrong together.
//!
//! Scope and known simplifications:
//! - k3s/RKE2: the systemd unit is read from systemd's own rules
//!   (systemd.unit(5), systemd.service(5), systemd.exec(5)) and the k3s
//!   command line from `pkg/configfilearg` / `pkg/cli/cmds`; see
//!   [`k3s_unit`]. Only the unit directories `/etc/systemd/system`,
//!   `/usr/local/lib/systemd/system` and `/usr/lib/systemd/system` are read.
//! - k3s/RKE2 and k0s generate most flags in code. Their generated defaults are
//!   reproduced for the service-account flags and a few others (listed in
//!   [`k3s_defaults`] and [`k0s_generated`]), not for every flag.
//! - Values are passed through as the distro passes them; nothing here checks
//!   that files exist or that a flag is known to kube-apiserver.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_norway::Value;

/// The effective service-account settings of one kube-apiserver argv.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SaSettings {
    /// `--service-account-issuer`, in order: the first one signs new tokens,
    /// all are accepted.
    pub issuers: Vec<String>,
    /// `--service-account-key-file`, in order (as given; the apiserver's
    /// fallback to `--tls-private-key-file` when none is given is not applied).
    pub key_files: Vec<String>,
    /// `--service-account-signing-key-file`, the last one given.
    pub signing_key_file: Option<String>,
    /// Effective `--api-audiences`: the explicit list, or all issuers when the
    /// flag is unset or empty.
    pub audiences: Vec<String>,
    /// Whether `--api-audiences` was given with a non-empty list.
    pub audiences_explicit: bool,
}

// ---------------------------------------------------------------------------
// argv per distro
// ---------------------------------------------------------------------------

/// The arguments kube-apiserver would start with on this node (without the
/// program name), in order, as the distro hands them over: mostly
/// `--flag=value`, but a `--flag value` pair written that way in a manifest
/// stays two items. `distro`: microk8s, kubeadm, minikube, k3s, rke2, k0s.
pub fn apiserver_args(root: &Path, distro: &str) -> Result<Vec<String>> {
    match distro {
        "microk8s" => {
            let path = root.join(MICROK8S_ARGS);
            let text = read(&path)?;
            Ok(microk8s_parse_args(&text, &microk8s_env))
        }
        "kubeadm" | "minikube" => {
            let path = root.join(KUBEADM_MANIFEST);
            let text = read(&path)?;
            manifest_args(&text).with_context(|| format!("reading {}", path.display()))
        }
        "k3s" => k3s_family_args(root, &K3S),
        "rke2" => k3s_family_args(root, &RKE2),
        "k0s" => k0s_args(root),
        other => bail!("unknown distro {other:?}"),
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

// --- MicroK8s --------------------------------------------------------------

pub const MICROK8S_ARGS: &str = "var/snap/microk8s/current/args/kube-apiserver";

/// The snap environment kubelite runs with, as far as the args files use it.
/// (In the real snap `SNAP_DATA` is the revision directory, e.g.
/// `/var/snap/microk8s/6750`; `current` is a symlink to it.)
pub fn microk8s_env(name: &str) -> Option<String> {
    match name {
        "SNAP_DATA" => Some("/var/snap/microk8s/current".into()),
        "SNAP" => Some("/snap/microk8s/current".into()),
        "SNAP_COMMON" => Some("/var/snap/microk8s/common".into()),
        _ => None,
    }
}

/// kubelite's `ReadArgsFromFile` (canonical/microk8s
/// `build-scripts/components/kubernetes/patches/*/0000-Kubelite-integration.patch`,
/// `cmd/kubelite/app/options/options.go`): for each line, `TrimSpace`; skip
/// empty lines and lines starting with `#`; delete every `"` and `'`; split on
/// single spaces (so two spaces give an empty argument, which kube-apiserver
/// ignores); `os.ExpandEnv` each part (unset variables expand to "").
pub fn microk8s_parse_args(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut args = Vec::new();
    // bufio.ScanLines: split on \n, drop one trailing \r (TrimSpace would anyway).
    for line in text.split('\n') {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line: String = line.chars().filter(|c| *c != '"' && *c != '\'').collect();
        for part in line.split(' ') {
            args.push(go_expand_env(part, env));
        }
    }
    args
}

/// Go's `os.Expand` (with `os.Getenv` semantics: unset -> ""): `$NAME`,
/// `${NAME}`, the one-character specials `$*`,`$#`,`$$`,`$@`,`$!`,`$?`,`$-`,
/// `$0`..`$9`; `${}` and an unterminated `${` are eaten; a `$` not followed by
/// a name stays.
pub fn go_expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut buf: Option<String> = None;
    let mut i = 0; // start of the not-yet-copied text
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            let out = buf.get_or_insert_with(String::new);
            out.push_str(&s[i..j]);
            let (name, w) = go_shell_name(&s[j + 1..]);
            if name.is_empty() && w > 0 {
                // invalid syntax: eat it
            } else if name.is_empty() {
                out.push('$');
            } else {
                out.push_str(&env(name).unwrap_or_default());
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    match buf {
        None => s.to_string(),
        Some(mut out) => {
            out.push_str(&s[i..]);
            out
        }
    }
}

fn is_shell_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn go_shell_name(s: &str) -> (&str, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_shell_special(b[1]) && b[2] == b'}' {
            return (&s[1..2], 3);
        }
        for (i, &c) in b.iter().enumerate().skip(1) {
            if c == b'}' {
                if i == 1 {
                    return ("", 2);
                }
                return (&s[1..i], i + 1);
            }
        }
        return ("", 1);
    }
    if is_shell_special(b[0]) {
        return (&s[0..1], 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    (&s[..n], n)
}

// --- kubeadm / minikube -------------------------------------------------------

pub const KUBEADM_MANIFEST: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";

/// The kube-apiserver container's `command` (minus the program) + `args` from
/// a static-pod manifest. The container is the one named `kube-apiserver`.
/// With no `command`, the image's entrypoint is the program and `args` are all
/// arguments.
pub fn manifest_args(text: &str) -> Result<Vec<String>> {
    let pod: Value = serde_norway::from_str(text).context("parsing manifest YAML")?;
    let containers = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("no spec.containers"))?;
    let c = containers
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("kube-apiserver"))
        .ok_or_else(|| anyhow!("no container named kube-apiserver"))?;
    let list = |key: &str| -> Result<Vec<String>> {
        match c.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("{key}: item {v:?} is not a string"))
                })
                .collect(),
            Some(other) => bail!("{key} is not a list: {other:?}"),
        }
    };
    let command = list("command")?;
    let mut argv: Vec<String> = command.into_iter().skip(1).collect();
    argv.extend(list("args")?);
    Ok(argv)
}

// --- k3s / RKE2 ---------------------------------------------------------------

/// Where one k3s-family distribution keeps things.
pub struct K3sFamily {
    /// `version.Program`: the extra default audience.
    pub program: &'static str,
    /// Config file, relative to the sysroot; drop-ins in `<config>.d/`.
    pub config: &'static str,
    /// `--data-dir` + `/server` (absolute on the node).
    pub server_dir: &'static str,
    /// kube-apiserver's own port: k3s puts it behind its supervisor on 6444,
    /// RKE2 runs it on 6443.
    pub secure_port: &'static str,
}

pub const K3S: K3sFamily = K3sFamily {
    program: "k3s",
    config: "etc/rancher/k3s/config.yaml",
    server_dir: "/var/lib/rancher/k3s/server",
    secure_port: "6444",
};

pub const RKE2: K3sFamily = K3sFamily {
    program: "rke2",
    config: "etc/rancher/rke2/config.yaml",
    server_dir: "/var/lib/rancher/rke2/server",
    secure_port: "6443",
};

fn k3s_family_args(root: &Path, d: &K3sFamily) -> Result<Vec<String>> {
    let unit = k3s_unit(root, d)?;
    let config = match &unit.config {
        Some(c) => root.join(c.trim_start_matches('/')),
        None => root.join(d.config),
    };
    // configfilearg.Parse: [binary server] + config file flags + the command
    // line's own flags, so the unit's items come last.
    let mut extra = k3s_config_apiserver_args(&config)?;
    extra.extend(unit.apiserver_args.iter().cloned());
    let mut defaults = k3s_defaults(d);
    if let Some(domain) = &unit.cluster_domain {
        // server.go: issuer and first audience are built from ClusterDomain.
        let issuer = format!("https://kubernetes.default.svc.{domain}");
        defaults.insert("service-account-issuer".into(), issuer.clone());
        defaults.insert("api-audiences".into(), format!("{issuer},{}", d.program));
    }
    if let Some(dir) = &unit.data_dir {
        let default_server = d.server_dir;
        let server = format!("{}/server", dir.trim_end_matches('/'));
        for v in defaults.values_mut() {
            if let Some(rest) = v.strip_prefix(default_server) {
                *v = format!("{server}{rest}");
            }
        }
    }
    Ok(k3s_get_args(&defaults, &extra))
}

/// What the k3s/RKE2 systemd unit adds: the config file (`--config`, `-c` or
/// `K3S_CONFIG_FILE`/`RKE2_CONFIG_FILE` from the environment), `--data-dir`,
/// `--cluster-domain` and the `--kube-apiserver-arg` items, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct K3sUnit {
    pub config: Option<String>,
    pub data_dir: Option<String>,
    pub cluster_domain: Option<String>,
    pub apiserver_args: Vec<String>,
}

const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
];

/// Read the server unit as systemd would: the first unit file found in the
/// search path, then `<unit>.d/*.conf` from every directory merged by file
/// name (the earlier directory masks the same name) and applied in name
/// order; `ExecStart=` empty resets, the last one set is run.
pub fn k3s_unit(root: &Path, d: &K3sFamily) -> Result<K3sUnit> {
    let unit = if d.program == "k3s" {
        "k3s.service"
    } else {
        "rke2-server.service"
    };
    let Some(main) = UNIT_DIRS
        .iter()
        .map(|u| root.join(u).join(unit))
        .find(|p| p.is_file())
    else {
        return Ok(K3sUnit::default());
    };
    let mut texts = vec![read(&main)?];
    let mut dropins: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    for dir in UNIT_DIRS
        .iter()
        .map(|u| root.join(u).join(format!("{unit}.d")))
    {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".conf") {
                dropins.entry(n).or_insert(e.path());
            }
        }
    }
    for p in dropins.values() {
        texts.push(read(p)?);
    }
    let prog = unit.trim_end_matches(".service");
    let mut exec: Option<String> = None;
    let mut env_files: Vec<String> = Vec::new();
    let mut env_lines: Vec<String> = Vec::new();
    for text in &texts {
        let mut in_service = false;
        // Join backslash-continued lines first (systemd.syntax(7)).
        let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
        for line in joined.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            if l.starts_with('[') {
                in_service = l == "[Service]";
                continue;
            }
            if !in_service {
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                bail!("unit line without '=': {l:?}");
            };
            let v = v.trim().to_string();
            match k.trim() {
                "ExecStart" => exec = (!v.is_empty()).then_some(v),
                "EnvironmentFile" => env_files.push(v.replace("%N", prog)),
                "Environment" => env_lines.push(v),
                _ => {}
            }
        }
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for f in env_files {
        let (must, f) = match f.strip_prefix('-') {
            Some(rest) => (false, rest.to_string()),
            None => (true, f),
        };
        let path = root.join(f.trim_start_matches('/'));
        match fs::read_to_string(&path) {
            Ok(text) => {
                for l in text.lines() {
                    let l = l.trim();
                    if l.starts_with('#') || l.starts_with(';') {
                        continue;
                    }
                    if let Some((k, v)) = l.split_once('=') {
                        let v = v.trim();
                        let v = v.trim_matches('"');
                        env.insert(k.trim().to_string(), v.to_string());
                    }
                }
            }
            Err(_) if !must => {}
            Err(e) => bail!("EnvironmentFile {f}: {e}"),
        }
    }
    for l in env_lines {
        for w in unit_words(&l)? {
            if let Some((k, v)) = w.split_once('=') {
                env.insert(k.into(), v.into());
            }
        }
    }
    let mut out = K3sUnit::default();
    if let Some(cmd) = exec {
        let words: Vec<String> = unit_words(cmd.trim_start_matches(['-', '@', '+', '!', ':']))?
            .into_iter()
            .map(|w| unit_expand(&w, &env))
            .collect();
        // urfave/cli flags of `server`; Go's flag syntax: -name or --name,
        // value after `=` or as the next word.
        let mut it = words.into_iter().skip(1).peekable();
        while let Some(w) = it.next() {
            let Some(flag) = w.strip_prefix("--").or_else(|| w.strip_prefix('-')) else {
                continue;
            };
            let (name, val) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag.to_string(), None),
            };
            let wants = [
                "config",
                "c",
                "data-dir",
                "d",
                "cluster-domain",
                "kube-apiserver-arg",
            ];
            if !wants.contains(&name.as_str()) {
                if val.is_none() && it.peek().is_some_and(|n| !n.starts_with('-')) {
                    it.next();
                }
                continue;
            }
            let val = match val {
                Some(v) => v,
                None => it.next().ok_or_else(|| anyhow!("{w} without a value"))?,
            };
            match name.as_str() {
                "config" | "c" => out.config = Some(val),
                "data-dir" | "d" => out.data_dir = Some(val),
                "cluster-domain" => out.cluster_domain = Some(val),
                _ => out.apiserver_args.push(val.trim().to_string()),
            }
        }
    }
    if out.config.is_none() {
        let var = if d.program == "k3s" {
            "K3S_CONFIG_FILE"
        } else {
            "RKE2_CONFIG_FILE"
        };
        out.config = env.get(var).filter(|v| !v.is_empty()).cloned();
    }
    Ok(out)
}

/// systemd's word splitting of a command line (systemd.service(5) "Command
/// lines"): blanks separate, '...' and "..." quote, backslash escapes.
fn unit_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut q: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (q, c) {
            (Some(open), c) if c == open => q = None,
            (_, '\\') => {
                let n = chars
                    .next()
                    .ok_or_else(|| anyhow!("trailing backslash in {s:?}"))?;
                cur.get_or_insert_with(String::new).push(n);
            }
            (Some(_), c) => cur.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                q = Some(c);
                cur.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => {
                if let Some(w) = cur.take() {
                    out.push(w);
                }
            }
            (None, c) => cur.get_or_insert_with(String::new).push(c),
        }
    }
    if q.is_some() {
        bail!("unclosed quote in {s:?}");
    }
    out.extend(cur);
    Ok(out)
}

/// `${VAR}` and `$VAR` from the unit's environment.
fn unit_expand(w: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let b = w.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            if b.get(i + 1) == Some(&b'{') {
                if let Some(end) = w[i + 2..].find('}') {
                    out.push_str(env.get(&w[i + 2..i + 2 + end]).map_or("", |v| v));
                    i += end + 3;
                    continue;
                }
            }
            let n = w[i + 1..]
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
            if n > 0 {
                out.push_str(env.get(&w[i + 1..i + 1 + n]).map_or("", |v| v));
                i += n + 1;
                continue;
            }
        }
        out.push(w[i..].chars().next().unwrap());
        i += w[i..].chars().next().unwrap().len_utf8();
    }
    out
}

/// The kube-apiserver defaults k3s generates (k3s-io/k3s
/// `pkg/daemons/control/server.go` `apiServer()`), for a default single server
/// with the embedded datastore: all service-account flags, plus the flags that
/// are the same on every default install. Flags that depend on runtime state
/// (advertise address, egress selector, ...) are left out.
pub fn k3s_defaults(d: &K3sFamily) -> BTreeMap<String, String> {
    let tls = format!("{}/tls", d.server_dir);
    let issuer = "https://kubernetes.default.svc.cluster.local";
    [
        ("allow-privileged", "true".to_string()),
        ("anonymous-auth", "false".to_string()),
        ("api-audiences", format!("{issuer},{}", d.program)),
        ("authorization-mode", "Node,RBAC".to_string()),
        ("bind-address", "127.0.0.1".to_string()),
        ("cert-dir", format!("{tls}/temporary-certs")),
        ("client-ca-file", format!("{tls}/client-ca.crt")),
        ("enable-admission-plugins", "NodeRestriction".to_string()),
        ("enable-bootstrap-token-auth", "true".to_string()),
        ("profiling", "false".to_string()),
        ("secure-port", d.secure_port.to_string()),
        ("service-account-issuer", issuer.to_string()),
        ("service-account-key-file", format!("{tls}/service.key")),
        (
            "service-account-signing-key-file",
            format!("{tls}/service.current.key"),
        ),
        ("service-cluster-ip-range", "10.43.0.0/16".to_string()),
        ("service-node-port-range", "30000-32767".to_string()),
        ("storage-backend", "etcd3".to_string()),
        ("tls-cert-file", format!("{tls}/serving-kube-apiserver.crt")),
        (
            "tls-private-key-file",
            format!("{tls}/serving-kube-apiserver.key"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The `kube-apiserver-arg` values after k3s merges `config.yaml` and the
/// drop-ins (k3s-io/k3s `pkg/configfilearg/parser.go` `readConfigFile`):
/// files are `config.yaml` (if present) then `config.yaml.d/*` whose name ends
/// in `.yaml`/`.yml` (case-insensitive), by file name. Per key, a later plain
/// `key:` replaces the value so far; `key+:` appends to it (a first `key+:` just
/// sets it). A scalar value is one item.
pub fn k3s_config_apiserver_args(config: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    if config.is_file() {
        files.push(config.to_path_buf());
    }
    let dropin_dir = {
        let mut s = config.as_os_str().to_owned();
        s.push(".d");
        std::path::PathBuf::from(s)
    };
    if dropin_dir.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&dropin_dir)
            .with_context(|| format!("listing {}", dropin_dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                let l = n.to_ascii_lowercase();
                l.ends_with(".yaml") || l.ends_with(".yml")
            })
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|n| dropin_dir.join(n)));
    }

    let mut value: Option<Value> = None;
    for f in &files {
        let text = read(f)?;
        let doc: Value =
            serde_norway::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        let map = match doc {
            Value::Mapping(m) => m,
            Value::Null => continue,
            other => bail!("{}: top level is not a mapping: {other:?}", f.display()),
        };
        for (k, v) in map {
            let k = go_to_string(&k)?;
            let (k, append) = match k.strip_suffix('+') {
                Some(base) => (base.to_string(), true),
                None => (k, false),
            };
            if k != "kube-apiserver-arg" {
                continue;
            }
            value = match (value.take(), append) {
                (Some(old), true) => {
                    let mut items = k3s_to_slice(&old)?;
                    items.extend(k3s_to_slice(&v)?);
                    Some(Value::Sequence(items))
                }
                _ => Some(v),
            };
        }
    }
    match value {
        None => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items.iter().map(go_to_string).collect(),
        Some(v) => Ok(vec![go_to_string(&v)?]),
    }
}

/// `toSlice` in parser.go: a string is one item, a list its items, anything
/// else its trimmed string form (none when empty).
fn k3s_to_slice(v: &Value) -> Result<Vec<Value>> {
    Ok(match v {
        Value::String(_) => vec![v.clone()],
        Value::Sequence(items) => items.clone(),
        other => {
            let s = go_to_string(other)?.trim().to_string();
            if s.is_empty() {
                vec![]
            } else {
                vec![Value::String(s)]
            }
        }
    })
}

/// wrangler `convert.ToString` for YAML scalars.
fn go_to_string(v: &Value) -> Result<String> {
    Ok(match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Tagged(t) => go_to_string(&t.value)?,
        other => bail!("not a scalar: {other:?}"),
    })
}

/// k3s-io/k3s `pkg/util/args.go` `GetArgs(initialArgs, extraArgs)`.
///
/// Each extra arg is `[--]name[=value]` (no `=`: value "true"). With `name+`
/// the value goes after the default and the values so far; with `name-` it goes
/// before them; plain `name` drops the default and appends to the values so
/// far (so repeated plain args accumulate). Output: one `--name=value` per
/// value, names sorted, values in order.
pub fn k3s_get_args(initial: &BTreeMap<String, String>, extra: &[String]) -> Vec<String> {
    let mut initial = initial.clone();
    let mut multi: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for unsplit in extra {
        let trimmed = unsplit.strip_prefix("--").unwrap_or(unsplit);
        let (arg, value) = match trimmed.split_once('=') {
            Some((a, v)) => (a, v.to_string()),
            None => (trimmed, "true".to_string()),
        };
        let cleaned = arg.trim_end_matches(['-', '+']).to_string();
        let initial_value = initial.get(&cleaned).cloned();
        let existing = multi.get(&cleaned).cloned();
        let mut new_values = Vec::new();
        if arg.ends_with('+') {
            new_values.extend(initial_value);
            new_values.extend(existing.unwrap_or_default());
            new_values.push(value);
        } else if arg.ends_with('-') {
            new_values.push(value);
            new_values.extend(initial_value);
            new_values.extend(existing.unwrap_or_default());
        } else {
            new_values.extend(existing.unwrap_or_default());
            new_values.push(value);
        }
        initial.remove(&cleaned);
        multi.insert(cleaned, new_values);
    }
    for (k, v) in initial {
        multi.insert(k, vec![v]);
    }
    multi
        .into_iter()
        .flat_map(|(k, vs)| {
            let k = k.strip_prefix("--").unwrap_or(&k).to_string();
            vs.into_iter().map(move |v| format!("--{k}={v}"))
        })
        .collect()
}

// --- k0s -----------------------------------------------------------------------

pub const K0S_CONFIG: &str = "etc/k0s/k0s.yaml";
pub const K0S_UNIT: &str = "etc/systemd/system/k0scontroller.service";

/// k0sproject/k0s `pkg/component/controller/apiserver.go` `buildConfig()`:
/// generated flags (a map), `spec.api.extraArgs` overriding same-named ones,
/// defaults filled in where still empty, then `spec.api.rawArgs` appended
/// after all flags. Upstream emits the map in Go's random iteration order; here
/// the flags are sorted by name (the order of distinct flags does not matter).
pub fn k0s_args(root: &Path) -> Result<Vec<String>> {
    let path = root.join(K0S_CONFIG);
    let cfg: Value = if path.is_file() {
        serde_norway::from_str(&read(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?
    } else {
        Value::Null // k0s runs with built-in defaults when there is no config file
    };
    // `k0s controller --single` or `--disable-components=konnectivity-server`
    // turn konnectivity off, which drops its audience and egress config.
    let unit = fs::read_to_string(root.join(K0S_UNIT)).unwrap_or_default();
    let exec = unit
        .lines()
        .find(|l| l.trim_start().starts_with("ExecStart="))
        .unwrap_or("");
    // `k0s install controller --single` writes the flag as `--single=true`.
    let konnectivity = !(exec
        .split_whitespace()
        .any(|w| w == "--single" || w == "--single=true")
        || (exec.contains("--disable-components") && exec.contains("konnectivity-server")));

    let api = cfg.get("spec").and_then(|s| s.get("api"));
    let mut flags = k0s_generated(&cfg, konnectivity)?;
    if let Some(extra) = api.and_then(|a| a.get("extraArgs")) {
        let extra = extra
            .as_mapping()
            .ok_or_else(|| anyhow!("spec.api.extraArgs is not a map"))?;
        for (k, v) in extra {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
                // map[string]string: k0s refuses to load a config with other types
                bail!("spec.api.extraArgs: {k:?}: {v:?} is not string: string");
            };
            flags.insert(k.to_string(), v.to_string());
        }
    }
    for (k, v) in [
        ("allow-privileged", "true"),
        ("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
        ("requestheader-group-headers", "X-Remote-Group"),
        ("requestheader-username-headers", "X-Remote-User"),
        ("secure-port", "6443"),
        ("anonymous-auth", "false"),
    ] {
        let e = flags.entry(k.to_string()).or_default();
        if e.is_empty() {
            *e = v.to_string();
        }
    }
    let mut argv: Vec<String> = flags
        .into_iter()
        .map(|(k, v)| format!("--{k}={v}"))
        .collect();
    if let Some(raw) = api.and_then(|a| a.get("rawArgs")) {
        let raw = raw
            .as_sequence()
            .ok_or_else(|| anyhow!("spec.api.rawArgs is not a list"))?;
        for r in raw {
            argv.push(
                r.as_str()
                    .ok_or_else(|| anyhow!("spec.api.rawArgs: {r:?} is not a string"))?
                    .to_string(),
            );
        }
    }
    Ok(argv)
}

/// The flags k0s generates before `extraArgs`, for the default data dir
/// (`/var/lib/k0s`, certs in `/var/lib/k0s/pki`). `tls-cipher-suites` (a long
/// constant) is left out; `shutdown-watch-termination-grace-period` is the
/// value k0s computes for the default request timeout.
pub fn k0s_generated(cfg: &Value, konnectivity: bool) -> Result<BTreeMap<String, String>> {
    let pki = "/var/lib/k0s/pki";
    let spec = cfg.get("spec");
    let api = spec.and_then(|s| s.get("api"));
    let port = match api.and_then(|a| a.get("port")) {
        None | Some(Value::Null) => "6443".to_string(),
        Some(v) => go_to_string(v)?,
    };
    let service_cidr = spec
        .and_then(|s| s.get("network"))
        .and_then(|n| n.get("serviceCIDR"))
        .and_then(Value::as_str)
        .unwrap_or("10.96.0.0/12")
        .to_string();
    let mut m: BTreeMap<String, String> = [
        ("secure-port", port),
        ("authorization-mode", "Node,RBAC".into()),
        ("client-ca-file", format!("{pki}/ca.crt")),
        ("enable-bootstrap-token-auth", "true".into()),
        (
            "kubelet-client-certificate",
            format!("{pki}/apiserver-kubelet-client.crt"),
        ),
        (
            "kubelet-client-key",
            format!("{pki}/apiserver-kubelet-client.key"),
        ),
        (
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname".into(),
        ),
        (
            "proxy-client-cert-file",
            format!("{pki}/front-proxy-client.crt"),
        ),
        (
            "proxy-client-key-file",
            format!("{pki}/front-proxy-client.key"),
        ),
        ("requestheader-allowed-names", "front-proxy-client".into()),
        (
            "requestheader-client-ca-file",
            format!("{pki}/front-proxy-ca.crt"),
        ),
        ("service-account-key-file", format!("{pki}/sa.pub")),
        ("service-cluster-ip-range", service_cidr),
        ("tls-min-version", "VersionTLS12".into()),
        ("tls-cert-file", format!("{pki}/server.crt")),
        ("tls-private-key-file", format!("{pki}/server.key")),
        ("service-account-signing-key-file", format!("{pki}/sa.key")),
        (
            "service-account-issuer",
            "https://kubernetes.default.svc".into(),
        ),
        (
            "service-account-jwks-uri",
            "https://kubernetes.default.svc/openid/v1/jwks".into(),
        ),
        ("profiling", "false".into()),
        ("v", "1".into()),
        ("kubelet-certificate-authority", format!("{pki}/ca.crt")),
        ("enable-admission-plugins", "NodeRestriction".into()),
        ("shutdown-watch-termination-grace-period", "18s".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(addr) = api.and_then(|a| a.get("address")).and_then(Value::as_str) {
        m.insert("advertise-address".into(), addr.to_string());
    }
    let mut audiences = vec!["https://kubernetes.default.svc"];
    if konnectivity {
        m.insert(
            "egress-selector-config-file".into(),
            "/var/lib/k0s/konnectivity.conf".into(),
        );
        audiences.push("system:konnectivity-server");
    }
    m.insert("api-audiences".into(), audiences.join(","));
    let storage = spec
        .and_then(|s| s.get("storage"))
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("etcd");
    match storage {
        "kine" => {
            m.insert(
                "etcd-servers".into(),
                "unix:///run/k0s/kine/kine.sock:2379".into(),
            );
        }
        _ => {
            m.insert("etcd-servers".into(), "https://127.0.0.1:2379".into());
            m.insert("etcd-cafile".into(), format!("{pki}/etcd/ca.crt"));
            m.insert(
                "etcd-certfile".into(),
                format!("{pki}/apiserver-etcd-client.crt"),
            );
            m.insert(
                "etcd-keyfile".into(),
                format!("{pki}/apiserver-etcd-client.key"),
            );
        }
    }
    Ok(m)
}

// ---------------------------------------------------------------------------
// pflag rules -> SaSettings
// ---------------------------------------------------------------------------

/// Boolean kube-apiserver flags likely to appear: a bool flag never takes the
/// next argument as its value (`--profiling false` leaves `false` positional).
const BOOL_FLAGS: &[&str] = &[
    "allow-privileged",
    "anonymous-auth",
    "enable-aggregator-routing",
    "enable-bootstrap-token-auth",
    "enable-garbage-collector",
    "enable-priority-and-fairness",
    "encryption-provider-config-automatic-reload",
    "profiling",
    "service-account-extend-token-expiration",
    "service-account-lookup",
    "logtostderr",
    "alsologtostderr",
    "help",
    "version",
];

const SA_FLAGS: &[&str] = &[
    "service-account-issuer",
    "service-account-key-file",
    "service-account-signing-key-file",
    "api-audiences",
];

/// The effective service-account settings of a kube-apiserver argv (without
/// the program name), by kube-apiserver's flag rules (spf13/pflag types in
/// kubernetes/kubernetes `pkg/kubeapiserver/options/authentication.go`):
///
/// - `--service-account-issuer`: StringArray, every use appends, no comma split.
/// - `--service-account-key-file`: StringArray, appends.
/// - `--service-account-signing-key-file`: string, last one wins.
/// - `--api-audiences`: StringSlice, each use split as one CSV record and
///   appended; unset or empty -> all issuers.
/// - `--flag=value` and `--flag value`; names normalized `_` -> `-` (the
///   apiserver's `WordSepNormalizeFunc`); empty arguments are ignored (cobra
///   passes them on and kube-apiserver only rejects non-empty positionals);
///   `--` ends the flags.
///
/// Errors like kube-apiserver's startup: no issuer, an empty issuer, the same
/// issuer twice, a non-empty positional argument, a flag missing its value.
/// Not checked: that an issuer containing `:` parses as a URL.
pub fn sa_settings(args: &[String]) -> Result<SaSettings> {
    let mut s = SaSettings::default();
    let mut audiences: Option<Vec<String>> = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a.is_empty() {
            continue;
        }
        if a == "--" {
            if let Some(p) = args[i..].iter().find(|p| !p.is_empty()) {
                bail!("kube-apiserver does not take any arguments, got {p:?}");
            }
            break;
        }
        let Some(body) = a.strip_prefix('-') else {
            bail!("kube-apiserver does not take any arguments, got {a:?}");
        };
        let long = body.strip_prefix('-');
        let body = long.unwrap_or(body);
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if name.is_empty() || name.starts_with('-') {
            bail!("bad flag syntax: {a}");
        }
        let name = if long.is_some() {
            name.replace('_', "-")
        } else {
            name.to_string()
        };
        let value = match inline {
            Some(v) => v,
            None if SA_FLAGS.contains(&name.as_str()) => match args.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => bail!("flag needs an argument: {a}"),
            },
            None if BOOL_FLAGS.contains(&name.as_str()) => "true".into(),
            None => {
                // Not a service-account flag: assume it takes the next argument
                // unless that looks like a flag.
                if args.get(i).is_some_and(|n| !n.starts_with('-')) {
                    i += 1;
                }
                continue;
            }
        };
        match name.as_str() {
            "service-account-issuer" => s.issuers.push(value),
            "service-account-key-file" => s.key_files.push(value),
            "service-account-signing-key-file" => s.signing_key_file = Some(value),
            "api-audiences" => {
                let items = pflag_read_csv(&value)?;
                audiences.get_or_insert_with(Vec::new).extend(items);
            }
            _ => {}
        }
    }

    if s.issuers.is_empty() {
        bail!("service-account-issuer is a required flag");
    }
    let mut seen = HashSet::new();
    for iss in &s.issuers {
        if iss.is_empty() {
            bail!("service-account-issuer should not be an empty string");
        }
        if !seen.insert(iss.as_str()) {
            bail!("service-account-issuer {iss:?} is already specified");
        }
    }
    match audiences {
        Some(a) if !a.is_empty() => {
            s.audiences = a;
            s.audiences_explicit = true;
        }
        _ => s.audiences = s.issuers.clone(),
    }
    Ok(s)
}

/// pflag `readAsCSV`: "" is an empty list; otherwise one record of Go's
/// `encoding/csv` (fields may be double-quoted, `""` inside quotes is a quote,
/// a bare quote in an unquoted field is an error).
pub fn pflag_read_csv(val: &str) -> Result<Vec<String>> {
    if val.is_empty() {
        return Ok(Vec::new());
    }
    let mut fields = Vec::new();
    let mut chars = val.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        bail!("api-audiences {val:?}: extraneous or missing \" in quoted-field")
                    }
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => bail!("api-audiences {val:?}: extraneous or missing \" in quoted-field"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => bail!("api-audiences {val:?}: bare \" in non-quoted-field"),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}
