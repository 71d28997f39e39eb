//! The systemd unit that starts k3s / RKE2, read the way systemd and the
//! binary read it: the installed unit file and its drop-ins (`<unit>.d/*.conf`,
//! the last `ExecStart=` wins, an empty one resets the list), line
//! continuations, `Environment=` and `EnvironmentFile=` (a `-` prefix makes a
//! missing file fine), the `ExecStart=` command line split with systemd's
//! quoting, and the binary's own flags (`--config`/`-c`, `--data-dir`/`-d`,
//! `--cluster-domain`, `--kube-apiserver-arg`). k3s `configfilearg.Parse`
//! puts the command line's flags AFTER every config file's: its
//! `--kube-apiserver-arg` items come last.
//!
//! Pure but for [`load`], which reads the files through the sysroot.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use crate::flags::{SaState, Source, ISSUER, SIGNING_KEY_FILE};
use crate::system::Sysroot;

/// `[unit]` of a k3s-style profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    /// The unit's name, e.g. `k3s.service`.
    pub name: String,
    /// Where the unit file may be installed, highest priority first.
    pub dirs: Vec<String>,
    /// The variable naming the config file (`K3S_CONFIG_FILE`).
    pub config_env: String,
    /// The data directory the profile's paths are written for.
    pub data_dir: String,
    /// The cluster domain the profile's defaults are written for.
    pub cluster_domain: String,
}

/// What the unit's command line says, each item with its file and line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// The file and line of the `ExecStart=` in effect.
    pub exec_start: Option<Source>,
    pub config: Option<(String, Source)>,
    pub data_dir: Option<(String, Source)>,
    pub cluster_domain: Option<(String, Source)>,
    /// `--kube-apiserver-arg` values, in order.
    pub apiserver_args: Vec<(String, Source)>,
}

/// One logical line of a unit file: its text with continuations joined, and
/// the line number it starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let (n, mut acc) = match cur.take() {
            Some(c) => c,
            None => {
                let t = line.trim_start();
                if t.starts_with('#') || t.starts_with(';') {
                    continue;
                }
                (i + 1, String::new())
            }
        };
        // Comment lines inside a continuation are skipped by systemd.
        let t = line.trim_start();
        if !acc.is_empty() && (t.starts_with('#') || t.starts_with(';')) {
            cur = Some((n, acc));
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            cur = Some((n, acc));
        } else {
            acc.push_str(line);
            out.push((n, acc));
        }
    }
    if let Some(c) = cur {
        out.push(c);
    }
    out
}

/// systemd's splitting of a command line into words: whitespace separates,
/// single and double quotes group, C-style backslash escapes.
pub fn split_words(s: &str, what: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut w = String::new();
        let mut quote: Option<char> = None;
        loop {
            match (chars.next(), quote) {
                (None, None) => break,
                (None, Some(q)) => bail!("{what}: the quote {q} is never closed"),
                (Some(c), Some(q)) if c == q => quote = None,
                (Some('\\'), _) => match chars.next() {
                    Some('n') => w.push('\n'),
                    Some('t') => w.push('\t'),
                    Some(c) => w.push(c),
                    None => bail!("{what}: ends with a backslash"),
                },
                (Some(c), Some(_)) => w.push(c),
                (Some(c @ ('\'' | '"')), None) => quote = Some(c),
                (Some(c), None) if c.is_whitespace() => break,
                (Some(c), None) => w.push(c),
            }
        }
        words.push(w);
    }
}

/// `$VAR` and `${VAR}` replaced from the unit's environment (unset: empty).
fn expand(word: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(b) = after.strip_prefix('{') {
            if let Some(end) = b.find('}') {
                out.push_str(env.get(&b[..end]).map(String::as_str).unwrap_or(""));
                rest = &b[end + 1..];
                continue;
            }
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len == 0 {
            out.push('$');
        } else {
            out.push_str(env.get(&after[..len]).map(String::as_str).unwrap_or(""));
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// An environment file: `KEY=VALUE` lines, `#`/`;` comments, optional quotes.
pub fn parse_env_file(text: &str, into: &mut BTreeMap<String, String>) {
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let t = t.strip_prefix("export ").unwrap_or(t);
        if let Some((k, v)) = t.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            into.insert(k.trim().to_string(), v.to_string());
        }
    }
}

/// The `[Service]` settings that matter, in file order (main unit, then the
/// drop-ins in name order).
#[derive(Debug, Default)]
pub struct Service {
    exec_start: Option<(String, Source)>,
    /// (path, optional, where it is named)
    env_files: Vec<(String, bool, Source)>,
    env: Vec<(String, Source)>,
}

fn read_service(files: &[(String, String)], unit_name: &str, svc: &mut Service) -> Result<()> {
    let stem = unit_name.rsplit_once('.').map_or(unit_name, |(s, _)| s);
    for (path, text) in files {
        let mut section = String::new();
        for (n, line) in logical_lines(text) {
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            if t.starts_with('[') {
                let Some(name) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
                    bail!("{path}:{n}: {t:?} is not a section header");
                };
                section = name.to_string();
                continue;
            }
            let Some((key, value)) = t.split_once('=') else {
                bail!("{path}:{n}: {t:?} is not KEY=VALUE");
            };
            if section != "Service" {
                continue;
            }
            let (key, value) = (key.trim(), value.trim());
            let src = Source::line(path, n);
            match key {
                "ExecStart" if value.is_empty() => svc.exec_start = None,
                "ExecStart" => svc.exec_start = Some((value.to_string(), src)),
                "EnvironmentFile" if value.is_empty() => svc.env_files.clear(),
                "EnvironmentFile" => {
                    let (optional, p) = match value.strip_prefix('-') {
                        Some(p) => (true, p),
                        None => (false, value),
                    };
                    let p = p
                        .replace("%N", stem)
                        .replace("%n", unit_name)
                        .replace("%%", "%");
                    svc.env_files.push((p, optional, src));
                }
                "Environment" if value.is_empty() => svc.env.clear(),
                "Environment" => svc.env.push((value.to_string(), src)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The words of the `ExecStart=` in effect, its file and line, the unit's
/// environment, and its `[Service]` settings.
pub type ExecStart = (Vec<String>, Source, BTreeMap<String, String>, Service);

/// The `ExecStart=` in effect of unit `name` (searched in `dirs`), split
/// into words with the unit's environment expanded, with its file and line,
/// and the unit's environment. None when no unit file exists.
pub fn exec_start(root: &Sysroot, name: &str, dirs: &[String]) -> Result<Option<ExecStart>> {
    let Some(main) = dirs
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| root.exists(p))
    else {
        return Ok(None);
    };
    let mut files = vec![(main.clone(), root.read_optional(&main)?.unwrap_or_default())];
    // Drop-ins from every unit directory, by file name; a name in a higher
    // priority directory hides the same name further down.
    let mut dropins: BTreeMap<String, String> = BTreeMap::new();
    for d in dirs.iter().rev() {
        let dir = format!("{d}/{name}.d");
        if !root.exists(&dir) {
            continue;
        }
        for n in root.list_dir(&dir)? {
            if n.ends_with(".conf") {
                dropins.insert(n.clone(), format!("{dir}/{n}"));
            }
        }
    }
    for path in dropins.into_values() {
        if let Some(text) = root.read_optional(&path)? {
            files.push((path, text));
        }
    }
    let mut svc = Service::default();
    read_service(&files, name, &mut svc)?;
    let mut env = BTreeMap::new();
    for (p, optional, src) in &svc.env_files {
        match root.read_optional(p)? {
            Some(text) => parse_env_file(&text, &mut env),
            None if *optional => {}
            None => {
                bail!("{src}: EnvironmentFile {p} does not exist (systemd will not start the unit)")
            }
        }
    }
    for (value, src) in &svc.env {
        for w in split_words(value, &src.to_string())? {
            if let Some((k, v)) = w.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    let (words, src) = match &svc.exec_start {
        Some((cmd, src)) => {
            let cmd = cmd.trim_start_matches(['-', '@', '+', '!', ':']);
            let words = split_words(cmd, &src.to_string())?
                .into_iter()
                .map(|w| expand(&w, &env))
                .collect();
            (words, src.clone())
        }
        None => (Vec::new(), Source::line(&main, 0)),
    };
    Ok(Some((words, src, env, svc)))
}

/// Read the unit `spec` names from the node. None when no unit file exists
/// (the distribution then runs with its config files alone).
pub fn load(root: &Sysroot, spec: &UnitSpec) -> Result<Option<CommandLine>> {
    let Some((words, src, env, svc)) = exec_start(root, &spec.name, &spec.dirs)? else {
        return Ok(None);
    };
    let mut cl = if words.is_empty() {
        CommandLine::default()
    } else {
        command_words(&words, &src)?
    };
    if cl.config.is_none() {
        if let Some(v) = env.get(&spec.config_env).filter(|v| !v.is_empty()) {
            let src = svc
                .env_files
                .first()
                .map(|f| f.2.clone())
                .unwrap_or_else(|| src.clone());
            cl.config = Some((v.clone(), src));
        }
    }
    Ok(Some(cl))
}

/// k0s: does the controller's unit turn konnectivity off (`--single`, or
/// `--disable-components` naming `konnectivity-server`)? Then k0s does not
/// add `system:konnectivity-server` to `--api-audiences`.
pub fn k0s_konnectivity_off(root: &Sysroot, name: &str, dirs: &[String]) -> Result<bool> {
    let Some((words, ..)) = exec_start(root, name, dirs)? else {
        return Ok(false);
    };
    let mut it = words.iter().peekable();
    while let Some(w) = it.next() {
        let w = w
            .strip_prefix("--")
            .or_else(|| w.strip_prefix('-'))
            .unwrap_or("");
        if w == "single" || w == "single=true" {
            return Ok(true);
        }
        let list = match w.split_once('=') {
            Some(("disable-components", v)) => Some(v.to_string()),
            None if w == "disable-components" => it.next().cloned(),
            _ => None,
        };
        if list.is_some_and(|l| l.split(',').any(|c| c.trim() == "konnectivity-server")) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The binary's flags on one `ExecStart=` line.
pub fn command_line(
    cmd: &str,
    src: &Source,
    env: &BTreeMap<String, String>,
) -> Result<CommandLine> {
    let cmd = cmd.trim_start_matches(['-', '@', '+', '!', ':']);
    let words: Vec<String> = split_words(cmd, &src.to_string())?
        .into_iter()
        .map(|w| expand(&w, env))
        .collect();
    command_words(&words, src)
}

/// The binary's flags among `words` (the binary first).
fn command_words(words: &[String], src: &Source) -> Result<CommandLine> {
    let mut cl = CommandLine {
        exec_start: Some(src.clone()),
        ..CommandLine::default()
    };
    let mut i = 1; // the binary
    while i < words.len() {
        let w = &words[i];
        i += 1;
        if w == "--" {
            break;
        }
        let Some(body) = w.strip_prefix("--").or_else(|| w.strip_prefix('-')) else {
            continue; // the subcommand (`server`) or another word
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let known = matches!(
            name,
            "config" | "c" | "data-dir" | "d" | "cluster-domain" | "kube-apiserver-arg"
        );
        let value = match inline {
            Some(v) => v,
            None if known => match words.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => bail!("{src}: {w} needs a value"),
            },
            None => {
                // Another flag: skip its value when the next word is no flag.
                if words.get(i).is_some_and(|n| !n.starts_with('-')) {
                    i += 1;
                }
                continue;
            }
        };
        let item = (value.clone(), src.clone());
        match name {
            "config" | "c" => cl.config = Some(item),
            "data-dir" | "d" => cl.data_dir = Some(item),
            "cluster-domain" => cl.cluster_domain = Some(item),
            // urfave/cli: no comma splitting, surrounding spaces trimmed.
            "kube-apiserver-arg" => cl
                .apiserver_args
                .push((value.trim().to_string(), src.clone())),
            _ => {}
        }
    }
    Ok(cl)
}

/// The flag name and operator of one `kube-apiserver-arg` item
/// (`name-=v` -> ("name", '-')).
fn item_flag(item: &str) -> (String, Option<char>, &str) {
    let body = item.strip_prefix("--").unwrap_or(item);
    let (arg, value) = body.split_once('=').unwrap_or((body, "true"));
    let op = arg.chars().last().filter(|c| matches!(c, '-' | '+'));
    let name = crate::flags::normalize(arg.trim_end_matches(['-', '+']));
    (name, op, value)
}

/// Refuse a plan that an item on the unit's command line defeats: those
/// items come after every config file, so no drop-in can win over them.
pub fn check_plan(
    unit: &str,
    items: &[(String, Source)],
    current: &SaState,
    target: &SaState,
) -> Result<()> {
    let ways_out = |what: &str| {
        format!(
            "remove it from the unit (then systemctl daemon-reload), or pass {what} so the plan keeps it"
        )
    };
    // The last `-=` issuer item is the first issuer, whatever a file says.
    if let Some((item, src, value)) = items
        .iter()
        .filter_map(|(t, s)| {
            let (n, op, v) = item_flag(t);
            (n == ISSUER && op == Some('-')).then_some((t, s, v))
        })
        .next_back()
    {
        if target.issuers.first().map(String::as_str) != Some(value)
            && target.issuers != current.issuers
        {
            bail!(
                "{src}: {unit} runs with --kube-apiserver-arg={item}, which keeps {value} in front \
                 of any config file's issuer (it would go on signing); {}",
                ways_out(&format!("--issuer {value}"))
            );
        }
    }
    // The last signing key on the command line wins over any file.
    if let Some((item, src, value)) = items
        .iter()
        .filter_map(|(t, s)| {
            let (n, _, v) = item_flag(t);
            (n == SIGNING_KEY_FILE).then_some((t, s, v))
        })
        .next_back()
    {
        if target.signing_key_file.as_deref() != Some(value)
            && target.signing_key_file != current.signing_key_file
        {
            bail!(
                "{src}: {unit} runs with --kube-apiserver-arg={item}, which wins over any config \
                 file's signing key (the new key would never sign); {}",
                ways_out(&format!("--signing-key {value}"))
            );
        }
    }
    // Audiences and key files the unit adds come after anything a drop-in
    // writes: a plan that changes those lists cannot keep their order.
    for flag in [crate::flags::API_AUDIENCES, crate::flags::KEY_FILE] {
        let changes = if flag == crate::flags::KEY_FILE {
            target.key_files != current.key_files
        } else {
            target.api_audiences != current.api_audiences
        };
        if let Some((item, src)) = items.iter().find(|(t, _)| item_flag(t).0 == flag) {
            if changes {
                bail!(
                    "{src}: {unit} runs with --kube-apiserver-arg={item}, which comes after any config \
                     file's --{flag} so the new list cannot be written in order; remove it from the unit \
                     (then systemctl daemon-reload) and put it in the config file"
                );
            }
        }
    }
    Ok(())
}

/// The profile's paths and defaults moved to the node's data dir and cluster
/// domain, and its config path taken from the command line.
pub fn apply_to_profile(profile: &mut super::Profile, spec: &UnitSpec, cl: &CommandLine) {
    if let Some((config, _)) = &cl.config {
        if *config != profile.config {
            profile.config = config.clone();
            profile.dropin = Some(format!("{config}.d/99-irsa-agent.yaml"));
        }
    }
    if let Some((dir, _)) = &cl.data_dir {
        let dir = dir.trim_end_matches('/');
        let moved = |v: &str| match v.strip_prefix(&spec.data_dir) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{dir}{rest}"),
            _ => v.to_string(),
        };
        profile.key_dir = moved(&profile.key_dir);
        for v in profile.defaults.values_mut() {
            *v = moved(v);
        }
    }
    if let Some((domain, _)) = &cl.cluster_domain {
        let from = format!(".svc.{}", spec.cluster_domain);
        let to = format!(".svc.{domain}");
        for v in profile.defaults.values_mut() {
            *v = v.replace(&from, &to);
        }
    }
    profile.command_line = cl.apiserver_args.clone();
}

/// A short error for `load`'s callers.
pub fn unit_error(spec: &UnitSpec, e: anyhow::Error) -> anyhow::Error {
    anyhow!("reading the {} unit: {e:#}", spec.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Source {
        Source::line("/u", 3)
    }

    #[test]
    fn install_script_forms_are_read() {
        let text = "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--kube-apiserver-arg=service-account-issuer-=https://pinned' \\\n\t'--kube-apiserver-arg' \\\n\t'service-account-signing-key-file=/k.key' \\\n\t'--disable' \\\n\t'traefik' \\\n\t'-c' '/etc/k.yaml' \\\n\t'--cluster-domain=corp.local' \\\n";
        let mut svc = Service::default();
        read_service(&[("/u".into(), text.into())], "k3s.service", &mut svc).unwrap();
        let (cmd, s) = svc.exec_start.unwrap();
        assert_eq!(s, Source::line("/u", 4));
        let cl = command_line(&cmd, &s, &BTreeMap::new()).unwrap();
        let items: Vec<&str> = cl.apiserver_args.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            items,
            [
                "service-account-issuer-=https://pinned",
                "service-account-signing-key-file=/k.key"
            ]
        );
        assert_eq!(cl.config.unwrap().0, "/etc/k.yaml");
        assert_eq!(cl.cluster_domain.unwrap().0, "corp.local");
    }

    #[test]
    fn later_exec_start_wins_and_empty_resets() {
        let files = vec![
            (
                "/a".to_string(),
                "[Service]\nExecStart=/bin/k3s server --kube-apiserver-arg=a=1\nEnvironmentFile=-/etc/default/%N\n"
                    .to_string(),
            ),
            ("/a.d/10.conf".into(), "[Service]\nExecStart=\nExecStart=/bin/k3s server\n".into()),
        ];
        let mut svc = Service::default();
        read_service(&files, "k3s.service", &mut svc).unwrap();
        assert_eq!(
            svc.exec_start.unwrap(),
            ("/bin/k3s server".into(), Source::line("/a.d/10.conf", 3))
        );
        assert_eq!(svc.env_files[0].0, "/etc/default/k3s");
        assert!(svc.env_files[0].1, "the - prefix makes it optional");
    }

    #[test]
    fn quoting_and_errors() {
        assert_eq!(
            split_words(r#"a 'b c' "d\"e" f\ g"#, "x").unwrap(),
            ["a", "b c", "d\"e", "f g"]
        );
        assert!(split_words("a 'b", "/u:3")
            .unwrap_err()
            .to_string()
            .starts_with("/u:3: the quote"));
        let mut svc = Service::default();
        let err = read_service(
            &[("/u".into(), "[Service\n".into())],
            "k3s.service",
            &mut svc,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("/u:1:"), "{err}");
        let mut env = BTreeMap::new();
        env.insert("CFG".to_string(), "/x.yaml".to_string());
        let cl = command_line("/bin/k3s server --config ${CFG}", &src(), &env).unwrap();
        assert_eq!(cl.config.unwrap().0, "/x.yaml");
    }

    #[test]
    fn pinned_items_refuse_a_plan_they_defeat() {
        let cur = SaState {
            issuers: vec!["https://pinned".into(), "https://k".into()],
            key_files: vec![],
            signing_key_file: Some("/k.key".into()),
            api_audiences: vec![],
        };
        let mut target = cur.clone();
        target.issuers.insert(0, "https://new".into());
        let items = vec![("service-account-issuer-=https://pinned".to_string(), src())];
        let err = check_plan("k3s.service", &items, &cur, &target)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/u:3: k3s.service runs with --kube-apiserver-arg=service-account-issuer-=https://pinned"), "{err}");
        assert!(
            err.contains("remove it from the unit") && err.contains("--issuer https://pinned"),
            "{err}"
        );
        check_plan("k3s.service", &items, &cur, &cur).unwrap();
        let items = vec![("service-account-signing-key-file=/k.key".to_string(), src())];
        let mut target = cur.clone();
        target.signing_key_file = Some("/new.key".into());
        let err = check_plan("k3s.service", &items, &cur, &target)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--signing-key /k.key"), "{err}");
        check_plan("k3s.service", &items, &cur, &cur).unwrap();
    }
}
