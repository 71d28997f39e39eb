//! k3s and RKE2: `config.yaml` then `config.yaml.d/*.yaml` (file-name order)
//! merged as k3s `pkg/configfilearg` does (a later `kube-apiserver-arg:`
//! replaces the list, `kube-apiserver-arg+:` appends), then combined with the
//! distribution's own apiserver flags as `pkg/util/args.go` `GetArgs` does
//! (`flag=v` replaces the default, `flag+=v` appends after it, `flag-=v`
//! prepends before it).
//!
//! irsa-agent never rewrites the user's files' lists; it owns one drop-in that
//! sorts last and appends to the list with `kube-apiserver-arg+:`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde_norway::{Mapping, Value};

use super::lines::{Lines, Token};
use super::yaml_lines::{block_sequences, escape_for, opening_quote};
use super::ConfigSet;
use crate::flags::{
    Arg, Effective, SaState, Source, API_AUDIENCES, ISSUER, KEY_FILE, SIGNING_KEY_FILE,
};

const KEY: &str = "kube-apiserver-arg";

/// One `kube-apiserver-arg` list item and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    pub text: String,
    pub source: Source,
    /// The item's own line (absent for a scalar value).
    pub token: Option<Token>,
}

/// Is `name` (a file in `config.yaml.d`) read by k3s?
pub fn is_dropin_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.') && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
}

/// The merged `kube-apiserver-arg` list of the files, in k3s' order: the main
/// config first, then the drop-ins sorted by path.
pub fn merged_list(files: &ConfigSet, config: &str) -> Result<Vec<ListItem>> {
    let mut list: Vec<ListItem> = Vec::new();
    for (path, text) in ordered(files, config) {
        let map: Mapping = if text.trim().is_empty() {
            Mapping::new()
        } else {
            super::yaml_lines::parse(path, text)?
        };
        let blocks = block_sequences(text, &[KEY, "kube-apiserver-arg+"]);
        for (k, v) in &map {
            let Some(k) = k.as_str() else { continue };
            let append = k.ends_with('+');
            if k.trim_end_matches('+') != KEY {
                continue;
            }
            let items = list_items(path, text, k, v, &blocks)?;
            if !append {
                list.clear();
            }
            list.extend(items);
        }
    }
    Ok(list)
}

fn ordered<'a>(files: &'a ConfigSet, config: &str) -> Vec<(&'a str, &'a str)> {
    let dir = format!("{config}.d/");
    let mut out: Vec<(&str, &str)> = files
        .get_key_value(config)
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .into_iter()
        .collect();
    out.extend(
        files
            .iter()
            .filter(|(p, _)| p.strip_prefix(&dir).is_some_and(is_dropin_name))
            .map(|(p, t)| (p.as_str(), t.as_str())),
    );
    out
}

fn list_items(
    path: &str,
    text: &str,
    key: &str,
    v: &Value,
    blocks: &[super::yaml_lines::Block],
) -> Result<Vec<ListItem>> {
    let to_string = |v: &Value| -> Result<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(anyhow!(
                "{path}: {key} holds a value that is not a string: {other:?}"
            )),
        }
    };
    let key_line = Lines::parse(text)
        .iter()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
        .unwrap_or(0);
    match v {
        Value::Sequence(seq) => {
            let values: Vec<String> = seq.iter().map(to_string).collect::<Result<_>>()?;
            let block = blocks
                .iter()
                .find(|b| b.key == key && b.items.iter().map(|t| &t.text).eq(values.iter()));
            Ok(values
                .into_iter()
                .enumerate()
                .map(|(i, text)| {
                    let token = block.map(|b| b.items[i].clone());
                    let line = token.as_ref().map(|t| t.line + 1).unwrap_or(key_line);
                    ListItem {
                        text,
                        source: Source::line(path, line),
                        token,
                    }
                })
                .collect())
        }
        Value::Null => Ok(Vec::new()),
        scalar => Ok(vec![ListItem {
            text: to_string(scalar)?,
            source: Source::line(path, key_line),
            token: None,
        }]),
    }
}

/// k3s `GetArgs`: the distribution's defaults combined with the user's items.
/// Returns the apiserver arguments sorted by flag name, repeated flags in order.
pub fn get_args(defaults: &[(String, String)], distro: &str, extra: &[ListItem]) -> Vec<Arg> {
    let mut initial: BTreeMap<&str, &str> = defaults
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut multi: BTreeMap<String, Vec<(String, Source)>> = BTreeMap::new();
    let default_source = Source::default_of(distro);
    for item in extra {
        let unsplit = item.text.strip_prefix("--").unwrap_or(&item.text);
        let (arg, value) = match unsplit.split_once('=') {
            Some((a, v)) => (a, v.to_string()),
            None => (unsplit, "true".to_string()),
        };
        let cleaned = arg.trim_end_matches(['-', '+']).to_string();
        let init = initial
            .get(cleaned.as_str())
            .map(|v| (v.to_string(), default_source.clone()));
        let existing = multi.get(&cleaned).cloned();
        let mine = (value, item.source.clone());
        let mut new_values = Vec::new();
        if arg.ends_with('+') {
            new_values.extend(init);
            new_values.extend(existing.into_iter().flatten());
            new_values.push(mine);
        } else if arg.ends_with('-') {
            new_values.push(mine);
            new_values.extend(init);
            new_values.extend(existing.into_iter().flatten());
        } else {
            new_values.extend(existing.into_iter().flatten());
            new_values.push(mine);
        }
        initial.remove(cleaned.as_str());
        multi.insert(cleaned, new_values);
    }
    for (k, v) in initial {
        multi.insert(k.to_string(), vec![(v.to_string(), default_source.clone())]);
    }
    multi
        .into_iter()
        .flat_map(|(name, values)| {
            let name = name.trim_start_matches('-').to_string();
            values
                .into_iter()
                .map(move |(v, s)| Arg::new(name.clone(), v, s))
        })
        .collect()
}

/// The apiserver arguments the files yield.
pub fn read(
    files: &ConfigSet,
    config: &str,
    defaults: &[(String, String)],
    distro: &str,
) -> Result<Vec<Arg>> {
    read_with_command_line(files, config, defaults, distro, &[])
}

/// The apiserver arguments the files and the unit's command line yield: the
/// command line's `--kube-apiserver-arg` items come after every file's
/// (k3s `configfilearg.Parse`).
pub fn read_with_command_line(
    files: &ConfigSet,
    config: &str,
    defaults: &[(String, String)],
    distro: &str,
    command_line: &[(String, Source)],
) -> Result<Vec<Arg>> {
    let mut list = merged_list(files, config)?;
    list.extend(command_line.iter().map(|(text, source)| ListItem {
        text: text.clone(),
        source: source.clone(),
        token: None,
    }));
    Ok(get_args(defaults, distro, &list))
}

/// The drop-in irsa-agent owns: regenerated so that the files together yield
/// exactly `target`. Returns the new file set.
pub fn edit(
    files: &ConfigSet,
    config: &str,
    dropin: &str,
    defaults: &[(String, String)],
    distro: &str,
    target: &SaState,
) -> Result<ConfigSet> {
    edit_with_command_line(files, config, dropin, defaults, distro, &[], target)
}

/// [`edit`] on a node whose unit's command line adds `command_line` items
/// after every file's (they are read, never edited).
pub fn edit_with_command_line(
    files: &ConfigSet,
    config: &str,
    dropin: &str,
    defaults: &[(String, String)],
    distro: &str,
    command_line: &[(String, Source)],
    target: &SaState,
) -> Result<ConfigSet> {
    let with_cl = |mut list: Vec<ListItem>| {
        list.extend(command_line.iter().map(|(text, source)| ListItem {
            text: text.clone(),
            source: source.clone(),
            token: None,
        }));
        list
    };
    // Already there (whatever the drop-in looks like): nothing to write.
    let now = get_args(defaults, distro, &with_cl(merged_list(files, config)?));
    if Effective::from_args(&now).state() == *target {
        return Ok(files.clone());
    }
    let mut base: ConfigSet = files.clone();
    base.remove(dropin);
    let base_list = merged_list(&base, config)?;
    let base_args = get_args(defaults, distro, &with_cl(base_list.clone()));
    let base_eff = Effective::from_args(&base_args);
    let cur = base_eff.state();
    let mut items: Vec<String> = Vec::new();
    let mut out = base.clone();

    let cannot = |flag: &str, have: &[String], want: &[String]| {
        anyhow!(
            "cannot express --{flag} {want:?} in the drop-in {dropin}: the other files already give {have:?} \
             in an order a drop-in cannot change; edit their kube-apiserver-arg lists by hand"
        )
    };
    // Issuers: the new ones are prepended, last first, so the first one signs.
    let Some(new_issuers) = target.issuers.strip_suffix(cur.issuers.as_slice()) else {
        return Err(cannot(ISSUER, &cur.issuers, &target.issuers));
    };
    items.extend(new_issuers.iter().rev().map(|v| format!("{ISSUER}-={v}")));
    // Audiences: appended one per item (no commas inside list items).
    if target.api_audiences != cur.api_audiences {
        let Some(rest) = target
            .api_audiences
            .strip_prefix(cur.api_audiences.as_slice())
        else {
            return Err(cannot(
                API_AUDIENCES,
                &cur.api_audiences,
                &target.api_audiences,
            ));
        };
        let op = if cur.api_audiences.is_empty() {
            "="
        } else {
            "+="
        };
        items.extend(rest.iter().map(|v| {
            let v = crate::flags::write_csv(std::slice::from_ref(v));
            format!("{API_AUDIENCES}{op}{v}")
        }));
    }
    // Key files: appended.
    let Some(rest) = target.key_files.strip_prefix(cur.key_files.as_slice()) else {
        return Err(cannot(KEY_FILE, &cur.key_files, &target.key_files));
    };
    items.extend(rest.iter().map(|v| format!("{KEY_FILE}+={v}")));
    // Signing key: replaces the default; a value the user wrote is edited in place.
    if target.signing_key_file != cur.signing_key_file {
        let want = target
            .signing_key_file
            .as_ref()
            .ok_or_else(|| anyhow!("a signing key file is required"))?;
        let user: Vec<&ListItem> = base_list
            .iter()
            .filter(|i| {
                let body = i.text.strip_prefix("--").unwrap_or(&i.text);
                body.split_once('=')
                    .map(|(n, _)| n.trim_end_matches(['-', '+']))
                    == Some(SIGNING_KEY_FILE)
            })
            .collect();
        match user.as_slice() {
            [] => items.push(format!("{SIGNING_KEY_FILE}={want}")),
            [one] => replace_user_item(&mut out, one, &format!("{SIGNING_KEY_FILE}={want}"))?,
            _ => bail!(
                "--{SIGNING_KEY_FILE} is set {} times in the k3s configuration ({}); leave one and run again",
                user.len(),
                user.iter().map(|i| i.source.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    let already_ours = files.get(dropin);
    if !items.is_empty() || already_ours.is_some() {
        out.insert(
            dropin.to_string(),
            render_dropin(&target.issuers[0], &items),
        );
    }
    Ok(out)
}

fn render_dropin(issuer: &str, items: &[String]) -> String {
    let mut s = String::new();
    s.push_str("# Written by irsa-agent for the service-account issuer\n");
    s.push_str(&format!("# {issuer}\n"));
    s.push_str("# It is read after config.yaml and the drop-ins that sort before it, and\n");
    s.push_str("# appends to their kube-apiserver-arg list: `flag-=v` puts v before the\n");
    s.push_str("# default, `flag+=v` after it. `irsa-agent apply` rewrites this file.\n");
    if items.is_empty() {
        s.push_str("kube-apiserver-arg+: []\n");
    } else {
        s.push_str("kube-apiserver-arg+:\n");
        for i in items {
            s.push_str(&format!("  - {}\n", serde_json::Value::String(i.clone())));
        }
    }
    s
}

fn replace_user_item(files: &mut ConfigSet, item: &ListItem, new_text: &str) -> Result<()> {
    let (Source::Line { file, .. }, Some(tok)) = (&item.source, &item.token) else {
        bail!(
            "{}: --{SIGNING_KEY_FILE} is written in a form irsa-agent does not edit in place; \
             put it in a block list (`- {SIGNING_KEY_FILE}=...`)",
            item.source
        );
    };
    let text = files.get(file).ok_or_else(|| anyhow!("{file} vanished"))?;
    let lines = Lines::parse(text);
    let mut out = String::with_capacity(text.len());
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        if i == tok.line {
            let quoted = escape_for(opening_quote(&tok.prefix), new_text);
            out.push_str(&tok.prefix);
            out.push_str(&quoted);
            out.push_str(&tok.suffix);
            out.push_str(&raw[lines.content(i).len()..]);
        } else {
            out.push_str(raw);
        }
    }
    files.insert(file.clone(), out);
    Ok(())
}

/// k3s' service-account defaults, for tests.
#[cfg(test)]
pub(crate) fn test_defaults() -> Vec<(String, String)> {
    vec![
        (
            ISSUER.into(),
            "https://kubernetes.default.svc.cluster.local".into(),
        ),
        (
            API_AUDIENCES.into(),
            "https://kubernetes.default.svc.cluster.local,k3s".into(),
        ),
        (KEY_FILE.into(), "/tls/service.key".into()),
        (SIGNING_KEY_FILE.into(), "/tls/service.current.key".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<(String, String)> {
        test_defaults()
    }

    const CONFIG: &str = "/etc/rancher/k3s/config.yaml";
    const DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/99-irsa-agent.yaml";

    fn item(text: &str) -> ListItem {
        ListItem {
            text: text.into(),
            source: Source::line("f", 1),
            token: None,
        }
    }

    fn values(args: &[Arg], name: &str) -> Vec<String> {
        args.iter()
            .filter(|a| a.name == name)
            .map(|a| a.value.clone())
            .collect()
    }

    #[test]
    fn get_args_forms() {
        let args = get_args(
            &defaults(),
            "k3s",
            &[
                item("service-account-issuer-=https://new"),
                item("api-audiences+=sts"),
                item("service-account-key-file=/a"),
                item("service-account-key-file=/b"),
            ],
        );
        assert_eq!(
            values(&args, ISSUER),
            [
                "https://new",
                "https://kubernetes.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            values(&args, API_AUDIENCES),
            ["https://kubernetes.default.svc.cluster.local,k3s", "sts"]
        );
        assert_eq!(
            values(&args, KEY_FILE),
            ["/a", "/b"],
            "plain form replaces the default and accumulates"
        );
        assert_eq!(args[0].name, API_AUDIENCES, "sorted by flag name");
    }

    #[test]
    fn later_plain_key_replaces_plus_key_appends() {
        let mut files = ConfigSet::new();
        files.insert(CONFIG.into(), "kube-apiserver-arg:\n- a=1\n".into());
        files.insert(
            format!("{CONFIG}.d/10-x.yaml"),
            "kube-apiserver-arg+:\n  - b=2\n".into(),
        );
        files.insert(
            format!("{CONFIG}.d/20-y.yml"),
            "kube-apiserver-arg: c=3\n".into(),
        );
        files.insert(
            format!("{CONFIG}.d/30-z.yaml"),
            "kube-apiserver-arg+: [d=4]\n".into(),
        );
        files.insert(
            format!("{CONFIG}.d/notes.txt"),
            "kube-apiserver-arg: [nope]\n".into(),
        );
        let list = merged_list(&files, CONFIG).unwrap();
        let texts: Vec<_> = list.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts, ["c=3", "d=4"]);
        assert_eq!(
            list[0].source,
            Source::line(format!("{CONFIG}.d/20-y.yml"), 1)
        );
    }

    #[test]
    fn dropin_prepends_issuer_and_is_idempotent() {
        let mut files = ConfigSet::new();
        files.insert(
            CONFIG.into(),
            "# mine\nkube-apiserver-arg:\n  - audit-log-maxage=30\n".into(),
        );
        let cur = Effective::from_args(&read(&files, CONFIG, &defaults(), "k3s").unwrap()).state();
        let target = crate::flags::converge(
            &cur,
            &crate::flags::Desired {
                issuer: "https://oidc.example.com".into(),
                audiences: vec!["sts.amazonaws.com".into()],
                signing_key_file: None,
                extra_key_files: vec![],
            },
        );
        let out = edit(&files, CONFIG, DROPIN, &defaults(), "k3s", &target).unwrap();
        assert_eq!(out[CONFIG], files[CONFIG], "the user's file is untouched");
        let args = read(&out, CONFIG, &defaults(), "k3s").unwrap();
        assert_eq!(Effective::from_args(&args).state(), target);
        assert!(out[DROPIN].contains("\"service-account-issuer-=https://oidc.example.com\""));
        let again = edit(&out, CONFIG, DROPIN, &defaults(), "k3s", &target).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn user_signing_key_is_edited_in_place() {
        let mut files = ConfigSet::new();
        files.insert(
            CONFIG.into(),
            "kube-apiserver-arg:\n  - \"service-account-signing-key-file=/old.key\" # mine\n  - x=1\n".into(),
        );
        let cur = Effective::from_args(&read(&files, CONFIG, &defaults(), "k3s").unwrap()).state();
        let mut target = cur.clone();
        target.signing_key_file = Some("/new.key".into());
        let out = edit(&files, CONFIG, DROPIN, &defaults(), "k3s", &target).unwrap();
        assert_eq!(
            out[CONFIG],
            "kube-apiserver-arg:\n  - \"service-account-signing-key-file=/new.key\" # mine\n  - x=1\n"
        );
        assert!(!out.contains_key(DROPIN));
    }
}
