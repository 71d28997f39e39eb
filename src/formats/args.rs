//! The MicroK8s args file (`/var/snap/microk8s/current/args/kube-apiserver`),
//! read the way kubelite's `ReadArgsFromFile` reads it: lines split on `\n`,
//! each trimmed (Go `strings.TrimSpace`), empty and `#`-prefixed lines skipped,
//! every `"` and `'` deleted, split on single spaces (`strings.Split(line, " ")`:
//! a tab does not separate arguments, two spaces make an empty argument),
//! `$VAR`/`${VAR}` expanded (`os.ExpandEnv`).

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::lines::{self, Item, Lines, Render, Token};
use crate::flags::{Arg, SaState, Source};

/// Environment variables kubelite expands (the snap's environment).
pub type Vars = BTreeMap<String, String>;

/// Go's `unicode.IsSpace`, which `strings.TrimSpace` trims.
fn is_go_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    ) || (c > '\u{ff}' && c.is_whitespace())
}

/// Every flag item of the file, values unquoted and expanded. Errors name the
/// line when kube-apiserver would not read a managed flag as written.
pub fn items(text: &str, vars: &Vars) -> Result<Vec<Item>> {
    if text.starts_with('\u{feff}') {
        bail!(
            "line 1 starts with a UTF-8 byte-order mark, which kubelite does not strip: \
             kube-apiserver would get it as part of its first argument; remove the first 3 bytes"
        );
    }
    let mut tokens = Vec::new();
    for (i, raw) in Lines::parse(text).iter().enumerate() {
        let trimmed = raw.trim_matches(is_go_space);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let unquoted: String = trimmed
            .chars()
            .filter(|c| *c != '"' && *c != '\'')
            .collect();
        let indent = &raw[..raw.len() - raw.trim_start_matches(is_go_space).len()];
        tokens.extend(unquoted.split(' ').map(|t| Token {
            text: expand(t, vars),
            line: i,
            prefix: indent.to_string(),
            suffix: String::new(),
        }));
    }
    let mut items = lines::items_from_tokens(&tokens).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // Lines holding anything but one flag and its value (on the same line or
    // the next) cannot be edited alone.
    for it in &mut items {
        let span: Vec<&Token> = tokens
            .iter()
            .filter(|t| (it.line..=it.last_line).contains(&t.line))
            .collect();
        let alone = match span.as_slice() {
            [_] => true,
            [flag, value] => !flag.text.contains('=') && value.text == it.value,
            _ => false,
        };
        it.shared_line = !alone;
    }
    Ok(items)
}

/// Go's `os.ExpandEnv` over the snap's variables (unknown ones expand to ""):
/// `$NAME`, `${NAME}`, the one-character specials `$*`, `$#`, `$$`, `$@`,
/// `$!`, `$?`, `$-`, `$0`..`$9`; a bad `${...}` is dropped, a `$` followed by
/// nothing it can name stays.
fn expand(token: &str, vars: &Vars) -> String {
    let special = |c: u8| {
        matches!(
            c,
            b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
        )
    };
    let b = token.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.push_str(&token[copied..j]);
            let rest = &token[j + 1..];
            let rb = rest.as_bytes();
            // (name, bytes consumed after the `$`)
            let (name, width) = if rb[0] == b'{' {
                if rb.len() > 2 && special(rb[1]) && rb[2] == b'}' {
                    (&rest[1..2], 3)
                } else {
                    match rest.find('}') {
                        Some(1) => ("", 2),
                        Some(end) => (&rest[1..end], end + 1),
                        None => ("", 1),
                    }
                }
            } else if special(rb[0]) {
                (&rest[..1], 1)
            } else {
                let n = rb
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                (&rest[..n], n)
            };
            if name.is_empty() && width == 0 {
                out.push('$');
            } else if let Some(v) = vars.get(name) {
                out.push_str(v);
            }
            j += width;
            copied = j + 1;
        }
        j += 1;
    }
    out.push_str(&token[copied.min(token.len())..]);
    out
}

/// The apiserver arguments the file yields.
pub fn read(path: &str, text: &str, vars: &Vars) -> Result<Vec<Arg>> {
    Ok(items(text, vars)
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?
        .into_iter()
        .map(|it| Arg::new(it.name, it.value, Source::line(path, it.line + 1)))
        .collect())
}

/// Rewrite the file so that its managed flags are exactly `target`.
pub fn edit(text: &str, target: &SaState, vars: &Vars) -> Result<String> {
    let items = items(text, vars)?;
    let edits = lines::plan(&items, target);
    lines::apply(text, &items, &edits, &ArgsRender { vars })
}

struct ArgsRender<'a> {
    vars: &'a Vars,
}

impl Render for ArgsRender<'_> {
    fn render(
        &self,
        like: Option<&Item>,
        name: &str,
        value: &str,
        _keep_suffix: bool,
    ) -> Result<String> {
        if value.is_empty()
            || value
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '$')
        {
            bail!("--{name}={value:?} cannot be written to an args file: kubelite strips quotes, splits on spaces and expands '$'");
        }
        // Write paths the way the file already does: ${SNAP_DATA}/... for the
        // snap's data directory.
        let mut shown = value.to_string();
        if let Some(data) = self.vars.get("SNAP_DATA") {
            if let Some(rest) = value
                .strip_prefix(data.as_str())
                .filter(|r| r.starts_with('/'))
            {
                shown = format!("${{SNAP_DATA}}{rest}");
            }
        }
        let indent = like.map(|l| l.prefix.as_str()).unwrap_or("");
        Ok(format!("{indent}--{name}={shown}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [(
            "SNAP_DATA".to_string(),
            "/var/snap/microk8s/current".to_string(),
        )]
        .into()
    }

    #[test]
    fn reads_like_kubelite() {
        let text = "# comment\n\n  --service-account-issuer='https://kubernetes.default.svc'\n--service-account-key-file=${SNAP_DATA}/certs/sa.key\n--api-audiences \"a,b\"\n--x=1 --y=2\n";
        let args = read("/args", text, &vars()).unwrap();
        let got: Vec<_> = args
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("service-account-issuer", "https://kubernetes.default.svc"),
                (
                    "service-account-key-file",
                    "/var/snap/microk8s/current/certs/sa.key"
                ),
                ("api-audiences", "a,b"),
                ("x", "1"),
                ("y", "2"),
            ]
        );
        assert_eq!(args[0].source, Source::line("/args", 3));
    }

    #[test]
    fn expands_like_os_expandenv() {
        let v = vars();
        assert_eq!(expand("$SNAP_DATA/x", &v), "/var/snap/microk8s/current/x");
        assert_eq!(expand("${SNAP_DATA}x", &v), "/var/snap/microk8s/currentx");
        assert_eq!(expand("$UNKNOWN/x", &v), "/x");
        assert_eq!(expand("a$", &v), "a$");
    }

    #[test]
    fn new_paths_under_snap_data_use_the_variable() {
        let text = "--service-account-issuer=https://a\n";
        let target = SaState {
            issuers: vec!["https://a".into()],
            key_files: vec!["/var/snap/microk8s/current/certs/new.pub".into()],
            signing_key_file: None,
            api_audiences: vec!["https://a".into()],
        };
        let out = edit(text, &target, &vars()).unwrap();
        assert_eq!(
            out,
            "--service-account-issuer=https://a\n--api-audiences=https://a\n--service-account-key-file=${SNAP_DATA}/certs/new.pub\n"
        );
    }

    #[test]
    fn refuses_to_split_a_shared_line() {
        let text = "--service-account-signing-key-file=/a --x=1\n";
        let target = SaState {
            signing_key_file: Some("/b".into()),
            ..SaState::default()
        };
        let err = edit(text, &target, &vars()).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
