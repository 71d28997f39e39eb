//! k0s: `/etc/k0s/k0s.yaml` `spec.api.extraArgs` (a map: one value per flag,
//! replacing k0s' generated value) and `spec.api.rawArgs` (a list appended
//! after the generated flags). A repeated flag's values are therefore the
//! generated-or-extraArgs value first, then the rawArgs ones.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde_norway::Value;

use super::lines::{self, Edit, Item, Lines, Token};
use super::yaml_lines::ListItemRender;
use crate::flags::{
    is_managed, Arg, SaState, Source, API_AUDIENCES, ISSUER, KEY_FILE, SIGNING_KEY_FILE,
};

/// A block-mapping key found in the text.
#[derive(Debug, Clone)]
struct Key {
    line: usize,
    indent: usize,
    /// Lines [line+1, end) belong to its value.
    end: usize,
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

fn is_blank(l: &str) -> bool {
    let t = l.trim();
    t.is_empty() || t.starts_with('#')
}

/// Find `name:` as a direct child of the block [from, to) at its child indent.
fn find_child(lines: &[&str], from: usize, to: usize, name: &str) -> Option<Key> {
    let child_indent = (from..to)
        .find(|&i| !is_blank(lines[i]))
        .map(|i| indent_of(lines[i]))?;
    for i in from..to {
        let l = lines[i];
        if is_blank(l) || indent_of(l) != child_indent {
            continue;
        }
        let body = l.trim_start();
        if body.strip_prefix(name).is_some_and(|r| r.starts_with(':')) {
            // The value ends at the first line less indented, or as indented
            // but not an item of an indentless sequence under this key.
            let end = (i + 1..to)
                .find(|&j| {
                    let (l, ind) = (lines[j], indent_of(lines[j]));
                    !is_blank(l)
                        && (ind < child_indent
                            || (ind == child_indent && !l.trim_start().starts_with("- ")))
                })
                .unwrap_or(to);
            // Trailing blank lines belong to what follows.
            let mut end = end;
            while end > i + 1 && is_blank(lines[end - 1]) {
                end -= 1;
            }
            return Some(Key {
                line: i,
                indent: child_indent,
                end,
            });
        }
    }
    None
}

struct Located {
    api: Key,
    extra_args: Option<Key>,
    raw_args: Option<Key>,
}

fn locate(path: &str, lines: &[&str]) -> Result<Located> {
    let spec = find_child(lines, 0, lines.len(), "spec")
        .ok_or_else(|| anyhow!("{path}: no top-level `spec:` mapping"))?;
    let api = find_child(lines, spec.line + 1, spec.end, "api")
        .ok_or_else(|| anyhow!("{path}: no `spec.api:` mapping (line {})", spec.line + 1))?;
    let extra_args = find_child(lines, api.line + 1, api.end, "extraArgs");
    let raw_args = find_child(lines, api.line + 1, api.end, "rawArgs");
    Ok(Located {
        api,
        extra_args,
        raw_args,
    })
}

/// The parsed `spec.api` extraArgs and rawArgs.
fn parse(path: &str, text: &str) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let doc: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        super::yaml_lines::parse(path, text)?
    };
    let api = doc.get("spec").and_then(|s| s.get("api"));
    let mut extra = BTreeMap::new();
    if let Some(m) = api
        .and_then(|a| a.get("extraArgs"))
        .and_then(Value::as_mapping)
    {
        for (k, v) in m {
            let k = k.as_str().ok_or_else(|| {
                anyhow!("{path}: spec.api.extraArgs has a key that is not a string")
            })?;
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => bail!("{path}: spec.api.extraArgs.{k} is not a string"),
            };
            extra.insert(k.to_string(), v);
        }
    }
    let mut raw = Vec::new();
    if let Some(s) = api
        .and_then(|a| a.get("rawArgs"))
        .and_then(Value::as_sequence)
    {
        for v in s {
            raw.push(
                v.as_str()
                    .ok_or_else(|| {
                        anyhow!("{path}: spec.api.rawArgs holds an item that is not a string")
                    })?
                    .to_string(),
            );
        }
    }
    Ok((extra, raw))
}

/// The rawArgs items with the lines they stand on.
fn raw_items(path: &str, lines: &[&str], loc: &Located, raw: &[String]) -> Result<Vec<Item>> {
    let Some(key) = &loc.raw_args else {
        return Ok(Vec::new());
    };
    let mut tokens = Vec::new();
    for (i, l) in lines.iter().enumerate().take(key.end).skip(key.line + 1) {
        let t = l.trim_start();
        if is_blank(l) {
            continue;
        }
        let Some(rest) = t.strip_prefix("- ") else {
            continue;
        };
        let rest = rest.trim_start();
        let (value, open, close) = super::yaml_lines::scalar(rest)
            .ok_or_else(|| anyhow!("{path}:{}: rawArgs item is not a one-line string", i + 1))?;
        tokens.push(Token {
            text: value,
            line: i,
            prefix: format!("{}{}", &l[..l.len() - rest.len()], open),
            suffix: close.to_string(),
        });
    }
    if !tokens.iter().map(|t| &t.text).eq(raw.iter()) {
        bail!("{path}: spec.api.rawArgs is not written as a block list with one item per line");
    }
    lines::items_from_tokens(&tokens).map_err(|e| anyhow!("{path}: spec.api.rawArgs: {e}"))
}

/// The apiserver arguments: generated defaults overridden by extraArgs (sorted
/// by name, as k0s passes a map), then rawArgs.
pub fn read(path: &str, text: &str, defaults: &[(String, String)]) -> Result<Vec<Arg>> {
    let (extra, raw) = parse(path, text)?;
    let lines_owned = Lines::parse(text);
    let lines: Vec<&str> = lines_owned.iter().collect();
    let mut map: BTreeMap<String, Arg> = defaults
        .iter()
        .map(|(k, v)| (k.clone(), Arg::new(k, v, Source::default_of("k0s"))))
        .collect();
    let loc = if extra.is_empty() && raw.is_empty() {
        None
    } else {
        Some(locate(path, &lines)?)
    };
    for (k, v) in &extra {
        let line = loc
            .as_ref()
            .and_then(|l| l.extra_args.as_ref())
            .and_then(|e| find_child(&lines, e.line + 1, e.end, k))
            .map(|key| key.line + 1)
            .unwrap_or(0);
        map.insert(k.clone(), Arg::new(k, v, Source::line(path, line)));
    }
    let mut out: Vec<Arg> = map.into_values().collect();
    if let Some(loc) = &loc {
        for it in raw_items(path, &lines, loc, &raw)? {
            out.push(Arg::new(it.name, it.value, Source::line(path, it.line + 1)));
        }
    }
    Ok(out)
}

/// Rewrite `k0s.yaml` so that the managed flags are exactly `target`.
/// Nothing but `spec.api.extraArgs` and `spec.api.rawArgs` may change: the
/// edit is checked on the parsed documents, so YAML the line editor does not
/// follow (tags, anchors, flow style around `spec.api`) is refused, not mangled.
pub fn edit(
    path: &str,
    text: &str,
    defaults: &[(String, String)],
    target: &SaState,
) -> Result<String> {
    let out = edit_lines(path, text, defaults, target)?;
    if out != text && outside_api_args(text)? != outside_api_args(&out)? {
        bail!(
            "{path}: cannot add spec.api.extraArgs/rawArgs without changing other settings \
             (spec.api is written with YAML features irsa-agent does not edit in place, such as \
             tags, anchors or flow style); add an empty `extraArgs:` mapping under spec.api by hand"
        );
    }
    Ok(out)
}

/// The document without `spec.api.extraArgs` and `spec.api.rawArgs` (an
/// `api:` left empty counts as no value).
fn outside_api_args(text: &str) -> Result<Value> {
    let mut doc: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_norway::from_str(text)?
    };
    if let Some(api) = doc.get_mut("spec").and_then(|s| s.get_mut("api")) {
        if let Some(m) = api.as_mapping_mut() {
            m.remove("extraArgs");
            m.remove("rawArgs");
            if m.is_empty() {
                *api = Value::Null;
            }
        }
    }
    Ok(doc)
}

fn edit_lines(
    path: &str,
    text: &str,
    defaults: &[(String, String)],
    target: &SaState,
) -> Result<String> {
    let (extra, raw) = parse(path, text)?;
    let lines_owned = Lines::parse(text);
    let lines: Vec<&str> = lines_owned.iter().collect();
    let loc = locate(path, &lines)?;
    let default_of = |f: &str| {
        defaults
            .iter()
            .find(|(k, _)| k == f)
            .map(|(_, v)| v.clone())
    };

    // What the map must say for each flag, and what rawArgs must add.
    let first = |v: &[String]| v.first().cloned();
    let want_map: [(&str, Option<String>); 4] = [
        (ISSUER, first(&target.issuers)),
        (KEY_FILE, first(&target.key_files)),
        (SIGNING_KEY_FILE, target.signing_key_file.clone()),
        (
            API_AUDIENCES,
            (!target.api_audiences.is_empty())
                .then(|| crate::flags::write_csv(&target.api_audiences)),
        ),
    ];
    let mut set_extra: Vec<(&str, String)> = Vec::new();
    for (flag, want) in &want_map {
        let have = extra.get(*flag).cloned().or_else(|| default_of(flag));
        match want {
            Some(w) if have.as_deref() != Some(w.as_str()) => set_extra.push((flag, w.clone())),
            Some(_) => {}
            None if have.is_some() => {
                bail!("{path}: k0s always passes --{flag}; it cannot be removed")
            }
            None => {}
        }
    }
    let raw_target = SaState {
        issuers: target.issuers.get(1..).unwrap_or_default().to_vec(),
        key_files: target.key_files.get(1..).unwrap_or_default().to_vec(),
        signing_key_file: None,
        api_audiences: Vec::new(),
    };
    let items = raw_items(path, &lines, &loc, &raw)?;
    let mut edits = Vec::new();
    let managed_last = items.iter().rposition(|i| is_managed(&i.name));
    let any_last = items.len().checked_sub(1);
    lines::plan_list(
        &items,
        ISSUER,
        &raw_target.issuers,
        managed_last.or(any_last),
        &mut edits,
    );
    let key_anchor = items
        .iter()
        .rposition(|i| i.name == KEY_FILE || i.name == ISSUER)
        .or(any_last);
    lines::plan_list(
        &items,
        KEY_FILE,
        &raw_target.key_files,
        key_anchor,
        &mut edits,
    );
    for (i, it) in items.iter().enumerate() {
        if it.name == SIGNING_KEY_FILE || it.name == API_AUDIENCES {
            edits.push(Edit::Delete { item: i });
        }
    }
    if set_extra.is_empty() && edits.is_empty() {
        return Ok(text.to_string());
    }

    // rawArgs edits (or a new rawArgs block) first, as a text.
    let child_indent = loc
        .extra_args
        .as_ref()
        .map(|k| k.indent)
        .or_else(|| loc.raw_args.as_ref().map(|k| k.indent))
        .or_else(|| {
            (loc.api.line + 1..loc.api.end)
                .find(|&i| !is_blank(lines[i]))
                .map(|i| indent_of(lines[i]))
        })
        .unwrap_or(loc.api.indent + 2);
    let pad = " ".repeat(child_indent);
    let eol = lines_owned.eol(0);
    let mut new_raw_block: Vec<String> = Vec::new();
    let text = if loc.raw_args.is_some() && !items.is_empty() {
        lines::apply(
            text,
            &items,
            &edits,
            &ListItemRender {
                list: "spec.api.rawArgs",
            },
        )?
    } else if !edits.is_empty() {
        // No rawArgs items yet: every edit is an insertion.
        for e in &edits {
            if let Edit::InsertAfter { name, value, .. } | Edit::InsertBefore { name, value, .. } =
                e
            {
                new_raw_block.push(format!("{pad}- --{name}={value}"));
            }
        }
        text.to_string()
    } else {
        text.to_string()
    };

    // Then the extraArgs map and any new rawArgs block, on the (re-split) text.
    let lines_owned = Lines::parse(&text);
    let lines: Vec<&str> = lines_owned.iter().collect();
    let loc = locate(path, &lines)?;
    let mut replace: BTreeMap<usize, String> = BTreeMap::new();
    let mut insert_after: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut insert_before: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut new_extra: Vec<String> = Vec::new();
    for (flag, value) in &set_extra {
        let rendered_value = yaml_scalar(value);
        match loc
            .extra_args
            .as_ref()
            .and_then(|e| find_child(&lines, e.line + 1, e.end, flag))
        {
            Some(k) => {
                replace.insert(
                    k.line,
                    format!("{}{flag}: {rendered_value}", " ".repeat(k.indent)),
                );
            }
            None => new_extra.push(format!("{flag}: {rendered_value}")),
        }
    }
    if !new_extra.is_empty() {
        match &loc.extra_args {
            Some(e) => {
                let inner = (e.line + 1..e.end)
                    .find(|&i| !is_blank(lines[i]))
                    .map(|i| indent_of(lines[i]))
                    .unwrap_or(e.indent + 2);
                let body = lines[e.line]
                    .trim_start()
                    .trim_start_matches("extraArgs:")
                    .trim();
                if !(body.is_empty() || body == "{}" || body.starts_with('#')) {
                    bail!("{path}:{}: spec.api.extraArgs is written inline; write it as a block mapping", e.line + 1);
                }
                if body == "{}" {
                    replace.insert(e.line, format!("{pad}extraArgs:"));
                }
                let at = e.end.saturating_sub(1).max(e.line);
                insert_after.entry(at).or_default().extend(
                    new_extra
                        .iter()
                        .map(|l| format!("{}{l}", " ".repeat(inner))),
                );
            }
            None => {
                let mut block = vec![format!("{pad}extraArgs:")];
                block.extend(new_extra.iter().map(|l| format!("{pad}  {l}")));
                match &loc.raw_args {
                    // Before rawArgs, whose items may be inserted after its key line.
                    Some(r) => insert_before.entry(r.line).or_default().extend(block),
                    None => {
                        let at = loc.api.end.saturating_sub(1).max(loc.api.line);
                        insert_after.entry(at).or_default().extend(block);
                    }
                }
            }
        }
    }
    if !new_raw_block.is_empty() {
        match &loc.raw_args {
            Some(r) => {
                let body = lines[r.line]
                    .trim_start()
                    .trim_start_matches("rawArgs:")
                    .trim();
                if body == "[]" {
                    replace.insert(r.line, format!("{pad}rawArgs:"));
                } else if !(body.is_empty() || body.starts_with('#')) {
                    bail!(
                        "{path}:{}: spec.api.rawArgs is written inline; write it as a block list",
                        r.line + 1
                    );
                }
                insert_after
                    .entry(r.line)
                    .or_default()
                    .extend(new_raw_block);
            }
            None => {
                let at = loc.api.end.saturating_sub(1).max(loc.api.line);
                let entry = insert_after.entry(at).or_default();
                entry.push(format!("{pad}rawArgs:"));
                entry.extend(new_raw_block);
            }
        }
    }
    let mut out = String::with_capacity(text.len() + 256);
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let eol_here = &raw[lines_owned.content(i).len()..];
        for b in insert_before.get(&i).into_iter().flatten() {
            out.push_str(b);
            out.push_str(eol);
        }
        match replace.get(&i) {
            Some(r) => {
                out.push_str(r);
                out.push_str(eol_here);
            }
            None => out.push_str(raw),
        }
        if let Some(adds) = insert_after.get(&i) {
            if eol_here.is_empty() {
                out.push_str(eol);
            }
            for a in adds {
                out.push_str(a);
                out.push_str(eol);
            }
        }
    }
    Ok(out)
}

fn yaml_scalar(v: &str) -> String {
    let plain_ok = !v.is_empty()
        && !v.contains(": ")
        && !v.contains(" #")
        && !v.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`', ' ',
        ])
        && !v.ends_with([':', ' '])
        && serde_norway::from_str::<Value>(v)
            .ok()
            .and_then(|x| x.as_str().map(|s| s == v))
            .unwrap_or(false);
    if plain_ok {
        v.to_string()
    } else {
        serde_json::Value::String(v.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Effective;

    const PATH: &str = "/etc/k0s/k0s.yaml";
    const CONFIG: &str = "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nmetadata:\n  name: k0s\nspec:\n  api:\n    address: 10.0.0.5\n    k0sApiPort: 9443\n    port: 6443\n    sans:\n    - 10.0.0.5\n  network:\n    provider: kuberouter\n";

    fn defaults() -> Vec<(String, String)> {
        vec![
            (ISSUER.into(), "https://kubernetes.default.svc".into()),
            (
                API_AUDIENCES.into(),
                "https://kubernetes.default.svc,system:konnectivity-server".into(),
            ),
            (KEY_FILE.into(), "/var/lib/k0s/pki/sa.pub".into()),
            (SIGNING_KEY_FILE.into(), "/var/lib/k0s/pki/sa.key".into()),
        ]
    }

    #[test]
    fn defaults_then_extra_args_then_raw_args() {
        let text = "spec:\n  api:\n    extraArgs:\n      service-account-issuer: https://a\n    rawArgs:\n    - --service-account-issuer=https://b\n";
        let eff = Effective::from_args(&read(PATH, text, &defaults()).unwrap());
        let s = eff.state();
        assert_eq!(s.issuers, ["https://a", "https://b"]);
        assert_eq!(eff.issuers[0].source, Source::line(PATH, 4));
        assert_eq!(eff.issuers[1].source, Source::line(PATH, 6));
        assert_eq!(eff.key_files[0].source, Source::default_of("k0s"));
    }

    #[test]
    fn converges_and_keeps_the_rest() {
        let cur = Effective::from_args(&read(PATH, CONFIG, &defaults()).unwrap()).state();
        let target = crate::flags::converge(
            &cur,
            &crate::flags::Desired {
                issuer: "https://oidc.example.com".into(),
                audiences: vec!["sts.amazonaws.com".into()],
                signing_key_file: None,
                extra_key_files: vec!["/var/lib/k0s/pki/extra.pub".into()],
            },
        );
        let out = edit(PATH, CONFIG, &defaults(), &target).unwrap();
        assert_eq!(
            out,
            CONFIG.replace(
                "    - 10.0.0.5\n",
                "    - 10.0.0.5\n    extraArgs:\n      service-account-issuer: https://oidc.example.com\n      api-audiences: https://kubernetes.default.svc,system:konnectivity-server,sts.amazonaws.com\n    rawArgs:\n    - --service-account-issuer=https://kubernetes.default.svc\n    - --service-account-key-file=/var/lib/k0s/pki/extra.pub\n"
            )
        );
        let after = Effective::from_args(&read(PATH, &out, &defaults()).unwrap()).state();
        assert_eq!(after, target);
        assert_eq!(
            edit(PATH, &out, &defaults(), &target).unwrap(),
            out,
            "idempotent"
        );
    }
}
