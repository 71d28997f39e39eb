//! Byte-preserving edits of "one flag per line" formats (the MicroK8s args
//! file, a static-pod manifest's `command:` list): plan the smallest set of line
//! edits that turns the current flag items into a target state, then apply them
//! to the text. Lines that are not touched keep every byte, line ending included.

use anyhow::{bail, Result};

use crate::flags::{
    read_csv, write_csv, SaState, API_AUDIENCES, ISSUER, KEY_FILE, SIGNING_KEY_FILE,
};

/// One flag occurrence in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Flag name without dashes.
    pub name: String,
    pub value: String,
    /// 0-based index of the line holding the flag.
    pub line: usize,
    /// 0-based index of the last line it spans (`--flag` and its value as two
    /// list items span two lines).
    pub last_line: usize,
    /// Text before the flag on its line (indentation, `- `, an opening quote).
    pub prefix: String,
    /// Text after the value on its line (closing quote, trailing comment).
    pub suffix: String,
    /// The line also holds other arguments, so it cannot be edited alone.
    pub shared_line: bool,
}

/// One argument as it stands in the text, before flags and values are paired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The argument after unquoting (and, for args files, variable expansion).
    pub text: String,
    /// 0-based line index.
    pub line: usize,
    /// Text before it on its line.
    pub prefix: String,
    /// Text after it on its line.
    pub suffix: String,
}

/// Boolean kube-apiserver flags (pflag `NoOptDefVal`): written without a
/// value they mean `true` and never take the next argument.
const BOOL_FLAGS: &[&str] = &[
    "allow-privileged",
    "alsologtostderr",
    "anonymous-auth",
    "audit-log-compress",
    "audit-log-truncate-enabled",
    "audit-webhook-truncate-enabled",
    "contention-profiling",
    "enable-aggregator-routing",
    "enable-bootstrap-token-auth",
    "enable-garbage-collector",
    "enable-logs-handler",
    "enable-priority-and-fairness",
    "encryption-provider-config-automatic-reload",
    "help",
    "logtostderr",
    "permit-address-sharing",
    "permit-port-sharing",
    "profiling",
    "service-account-extend-token-expiration",
    "service-account-lookup",
    "watch-cache",
];

/// Pair flags with their values the way pflag does: `--name=value`, or
/// `--name value` for a flag that takes a value (the managed flags always do;
/// a known boolean flag never does; for other flags a following argument that
/// is not a flag is taken as the value). Arguments that are not long flags
/// (the binary name) are skipped.
///
/// Refused, with the line, because kube-apiserver would not read them as the
/// text suggests: a managed flag with no value after it (pflag: "flag needs an
/// argument"); a flag of unknown type with no value right before a managed
/// flag (if it takes a value, pflag reads the managed flag as that value); a
/// lone `--` before a managed flag (pflag stops reading flags there); a managed
/// flag written with one dash (pflag reads `-name` as short flags).
pub fn items_from_tokens(tokens: &[Token]) -> Result<Vec<Item>> {
    pair(tokens, true)
}

/// [`items_from_tokens`] for an argv that kube-apiserver already accepted
/// (a running process): nothing is refused.
pub fn items_from_argv(tokens: &[Token]) -> Vec<Item> {
    pair(tokens, false).unwrap_or_default()
}

fn pair(tokens: &[Token], strict: bool) -> Result<Vec<Item>> {
    use crate::flags::{is_managed, normalize, split_flag};
    let managed_token =
        |t: &Token| split_flag(&t.text).is_some_and(|(n, _)| is_managed(&normalize(n)));
    let mut out = Vec::new();
    let mut t = 0;
    while t < tokens.len() {
        let tok = &tokens[t];
        if strict && tok.text == "--" {
            if let Some(m) = tokens[t + 1..].iter().find(|n| managed_token(n)) {
                bail!(
                    "line {}: a lone `--` ends kube-apiserver's flags, so {} on line {} would be \
                     an argument it refuses; remove the `--`",
                    tok.line + 1,
                    m.text,
                    m.line + 1
                );
            }
        }
        if strict {
            let one_dash = tok.text.strip_prefix('-').filter(|b| !b.starts_with('-'));
            if let Some(body) = one_dash {
                let name = normalize(body.split('=').next().unwrap_or(body));
                if is_managed(&name) {
                    bail!(
                        "line {}: -{name} has a single dash, which kube-apiserver reads as short \
                         flags and refuses to start; write --{name}",
                        tok.line + 1
                    );
                }
            }
        }
        let Some((name, value)) = split_flag(&tok.text) else {
            t += 1;
            continue;
        };
        let name = normalize(name);
        let mut last = tok;
        let next = tokens.get(t + 1);
        let value = match (value, next) {
            (Some(v), _) => v.to_string(),
            (None, Some(n)) if is_managed(&name) => {
                t += 1;
                last = n;
                n.text.clone()
            }
            (None, None) if strict && is_managed(&name) => bail!(
                "line {}: --{name} has no value after it; kube-apiserver refuses to start \
                 (flag needs an argument); write --{name}=VALUE",
                tok.line + 1
            ),
            (None, _) if BOOL_FLAGS.contains(&name.as_str()) => "true".to_string(),
            (None, Some(n)) if strict && managed_token(n) => bail!(
                "line {}: --{name} has no value, and if it takes one kube-apiserver reads the \
                 next argument {:?} (line {}) as that value instead of as a flag; write \
                 --{name}=VALUE (or --{name}=true)",
                tok.line + 1,
                n.text,
                n.line + 1
            ),
            (None, Some(n)) if !n.text.starts_with('-') => {
                t += 1;
                last = n;
                n.text.clone()
            }
            (None, _) => "true".to_string(),
        };
        out.push(Item {
            name,
            value,
            line: tok.line,
            last_line: last.line,
            prefix: tok.prefix.clone(),
            suffix: last.suffix.clone(),
            shared_line: false,
        });
        t += 1;
    }
    Ok(out)
}

/// A text split into lines, each keeping its own line ending.
#[derive(Debug, Clone)]
pub struct Lines {
    lines: Vec<String>,
}

impl Lines {
    pub fn parse(text: &str) -> Self {
        Lines {
            lines: text.split_inclusive('\n').map(str::to_string).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Line `i` without its line ending.
    pub fn content(&self, i: usize) -> &str {
        let l = &self.lines[i];
        l.strip_suffix("\r\n")
            .or_else(|| l.strip_suffix('\n'))
            .unwrap_or(l)
    }

    /// The line ending of line `i`, or of the file when `i` has none.
    pub fn eol(&self, i: usize) -> &'static str {
        let of = |l: &str| {
            if l.ends_with("\r\n") {
                Some("\r\n")
            } else if l.ends_with('\n') {
                Some("\n")
            } else {
                None
            }
        };
        self.lines
            .get(i)
            .and_then(|l| of(l))
            .or_else(|| self.lines.iter().find_map(|l| of(l)))
            .unwrap_or("\n")
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.lines.len()).map(|i| self.content(i))
    }
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Rewrite item `item` with a new value (all its lines become one).
    Replace { item: usize, value: String },
    /// Remove item `item`.
    Delete { item: usize },
    /// A new flag line before line `line`, rendered like the item at `like`.
    InsertBefore {
        line: usize,
        like: usize,
        name: &'static str,
        value: String,
    },
    /// A new flag line after line `line`, rendered like the item at `like`.
    InsertAfter {
        line: usize,
        like: usize,
        name: &'static str,
        value: String,
    },
}

/// Where new lines go when the flag has no line yet and the text has no flag
/// at all (an empty args file).
#[derive(Debug, Clone, Copy)]
pub struct Fallback {
    /// Insert after this line (None: at the very end).
    pub after_line: Option<usize>,
}

/// Plan the edits that turn `items` (all flag items of the text, in order)
/// into `target` for the four managed flags. Unmanaged items are never touched.
pub fn plan(items: &[Item], target: &SaState) -> Vec<Edit> {
    let mut edits = Vec::new();
    let managed_last = last_index(items, crate::flags::is_managed);
    let any_last = items.len().checked_sub(1);
    let issuer_last = last_index(items, |n| n == ISSUER);

    // Issuers: the list is converged in place; new ones go before the first kept one.
    let issuer_anchor = managed_last.or(any_last);
    plan_list(items, ISSUER, &target.issuers, issuer_anchor, &mut edits);

    // Audiences: one explicit line.
    let aud_anchor = issuer_last.or(managed_last).or(any_last);
    let aud_items = indexes(items, API_AUDIENCES);
    // Read as pflag does (CSV): `a,` is the audiences "a" and "", which
    // differs from any target, so such a value is rewritten. A value that is
    // not CSV at all is rewritten too. An empty value is no audience at all.
    let mut clean = true;
    let current_aud: Vec<String> = aud_items
        .iter()
        .flat_map(|&i| {
            read_csv(&items[i].value).unwrap_or_else(|_| {
                clean = false;
                Vec::new()
            })
        })
        .collect();
    if target.api_audiences.is_empty() {
        edits.extend(
            aud_items
                .iter()
                .filter(|&&i| !items[i].value.is_empty())
                .map(|&item| Edit::Delete { item }),
        );
    } else if current_aud != target.api_audiences || !clean {
        let joined = write_csv(&target.api_audiences);
        match aud_items.first() {
            Some(&first) => {
                edits.push(Edit::Replace {
                    item: first,
                    value: joined,
                });
                edits.extend(aud_items[1..].iter().map(|&item| Edit::Delete { item }));
            }
            None => push_insert_after(items, aud_anchor, API_AUDIENCES, joined, &mut edits),
        }
    }

    // Key files: converged in place; new ones after the last kept one.
    let key_anchor = last_index(items, |n| n == KEY_FILE)
        .or(issuer_last)
        .or(managed_last)
        .or(any_last);
    plan_list(items, KEY_FILE, &target.key_files, key_anchor, &mut edits);

    // Signing key: exactly one line, the last one (the one that wins today) kept.
    let sign_items = indexes(items, SIGNING_KEY_FILE);
    match (&target.signing_key_file, sign_items.last()) {
        (None, _) => edits.extend(sign_items.iter().map(|&item| Edit::Delete { item })),
        (Some(want), None) => {
            let anchor = key_anchor.or(managed_last).or(any_last);
            push_insert_after(items, anchor, SIGNING_KEY_FILE, want.clone(), &mut edits)
        }
        (Some(want), Some(&last)) => {
            if items[last].value != *want {
                edits.push(Edit::Replace {
                    item: last,
                    value: want.clone(),
                });
            }
            edits.extend(
                sign_items[..sign_items.len() - 1]
                    .iter()
                    .map(|&item| Edit::Delete { item }),
            );
        }
    }
    edits
}

fn indexes(items: &[Item], name: &str) -> Vec<usize> {
    items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.name == name)
        .map(|(i, _)| i)
        .collect()
}

fn last_index(items: &[Item], pred: impl Fn(&str) -> bool) -> Option<usize> {
    items.iter().rposition(|it| pred(&it.name))
}

fn push_insert_after(
    items: &[Item],
    anchor: Option<usize>,
    name: &'static str,
    value: String,
    edits: &mut Vec<Edit>,
) {
    match anchor {
        Some(a) => edits.push(Edit::InsertAfter {
            line: items[a].last_line,
            like: a,
            name,
            value,
        }),
        None => edits.push(Edit::InsertAfter {
            line: usize::MAX,
            like: usize::MAX,
            name,
            value,
        }),
    }
}

/// Converge the repeated flag `name` to exactly `target`, in order, keeping
/// every item whose value stays and is already in the right order.
pub fn plan_list(
    items: &[Item],
    name: &'static str,
    target: &[String],
    anchor: Option<usize>,
    edits: &mut Vec<Edit>,
) {
    // Drop duplicates and values that are no longer wanted.
    let mut kept: Vec<usize> = Vec::new();
    for i in indexes(items, name) {
        let v = &items[i].value;
        if target.contains(v) && !kept.iter().any(|&k| items[k].value == *v) {
            kept.push(i);
        } else {
            edits.push(Edit::Delete { item: i });
        }
    }
    let mut deleted: Vec<usize> = Vec::new();
    let mut ptr = 0;
    let mut after: Option<usize> = None;
    for t in target {
        while ptr < kept.len() && deleted.contains(&kept[ptr]) {
            ptr += 1;
        }
        if ptr < kept.len() && items[kept[ptr]].value == *t {
            after = Some(kept[ptr]);
            ptr += 1;
            continue;
        }
        if let Some(j) = kept[ptr..].iter().position(|&k| items[k].value == *t) {
            // Out of order: remove it there, insert it here.
            let k = kept[ptr + j];
            edits.push(Edit::Delete { item: k });
            deleted.push(k);
        }
        match (kept.get(ptr), after) {
            (Some(&next), _) => edits.push(Edit::InsertBefore {
                line: items[next].line,
                like: next,
                name,
                value: t.clone(),
            }),
            (None, Some(a)) => edits.push(Edit::InsertAfter {
                line: items[a].last_line,
                like: a,
                name,
                value: t.clone(),
            }),
            (None, None) => push_insert_after(items, anchor, name, t.clone(), edits),
        }
    }
}

/// How a format writes one flag line.
pub trait Render {
    /// The text of a line holding `--name=value`, styled like `like` (None when
    /// the text has no flag line to copy from). For a replacement `keep_suffix`
    /// keeps what followed the old value (a closing quote, a comment).
    fn render(
        &self,
        like: Option<&Item>,
        name: &str,
        value: &str,
        keep_suffix: bool,
    ) -> Result<String>;
}

/// Apply `edits` to `text`. Every line no edit names is kept byte for byte.
pub fn apply(text: &str, items: &[Item], edits: &[Edit], fmt: &dyn Render) -> Result<String> {
    let lines = Lines::parse(text);
    let n = lines.len();
    let mut replace: Vec<Option<String>> = vec![None; n];
    let mut delete = vec![false; n];
    let mut before: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut after: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut at_end: Vec<String> = Vec::new();
    let check_alone = |i: usize| -> Result<()> {
        if items[i].shared_line {
            bail!(
                "line {} holds --{} together with other arguments; put it on a line of its own",
                items[i].line + 1,
                items[i].name
            );
        }
        Ok(())
    };
    for e in edits {
        match e {
            Edit::Replace { item, value } => {
                check_alone(*item)?;
                let it = &items[*item];
                replace[it.line] = Some(fmt.render(Some(it), &it.name, value, true)?);
                delete[it.line + 1..=it.last_line].fill(true);
            }
            Edit::Delete { item } => {
                check_alone(*item)?;
                let it = &items[*item];
                delete[it.line..=it.last_line].fill(true);
            }
            Edit::InsertBefore {
                line,
                like,
                name,
                value,
            } => {
                before[*line].push(fmt.render(items.get(*like), name, value, false)?);
            }
            Edit::InsertAfter {
                line,
                like,
                name,
                value,
            } => {
                let text = fmt.render(items.get(*like), name, value, false)?;
                if *line < n {
                    after[*line].push(text);
                } else {
                    at_end.push(text);
                }
            }
        }
    }
    let mut out = String::with_capacity(text.len() + 256);
    for i in 0..n {
        let eol = lines.eol(i);
        for b in &before[i] {
            out.push_str(b);
            out.push_str(eol);
        }
        if !delete[i] {
            match &replace[i] {
                Some(r) => {
                    out.push_str(r);
                    out.push_str(&lines.lines[i][lines.content(i).len()..]);
                }
                None => out.push_str(&lines.lines[i]),
            }
        }
        if !after[i].is_empty() {
            if !lines.lines[i].ends_with('\n') {
                out.push_str(eol);
            }
            for (j, a) in after[i].iter().enumerate() {
                out.push_str(a);
                if j + 1 < after[i].len() || lines.lines[i].ends_with('\n') {
                    out.push_str(eol);
                }
            }
        }
    }
    if !at_end.is_empty() {
        let eol = lines.eol(n.saturating_sub(1));
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        for a in &at_end {
            out.push_str(a);
            out.push_str(eol);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;
    impl Render for Plain {
        fn render(
            &self,
            _like: Option<&Item>,
            name: &str,
            value: &str,
            _keep: bool,
        ) -> Result<String> {
            Ok(format!("--{name}={value}"))
        }
    }

    fn items_of(text: &str) -> Vec<Item> {
        Lines::parse(text)
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let (n, v) = crate::flags::split_flag(l)?;
                Some(Item {
                    name: n.into(),
                    value: v.unwrap_or_default().into(),
                    line: i,
                    last_line: i,
                    prefix: String::new(),
                    suffix: String::new(),
                    shared_line: false,
                })
            })
            .collect()
    }

    fn run(text: &str, target: &SaState) -> String {
        let items = items_of(text);
        apply(text, &items, &plan(&items, target), &Plain).unwrap()
    }

    #[test]
    fn inserts_new_issuer_first_and_keeps_other_bytes() {
        let text = "# c\r\n--a=1\r\n--service-account-issuer=https://old\r\n--b=2\r\n--service-account-key-file=/k\r\n--service-account-signing-key-file=/s";
        let target = SaState {
            issuers: vec!["https://new".into(), "https://old".into()],
            key_files: vec!["/k".into()],
            signing_key_file: Some("/s".into()),
            api_audiences: vec!["https://old".into(), "sts".into()],
        };
        assert_eq!(
            run(text, &target),
            "# c\r\n--a=1\r\n--service-account-issuer=https://new\r\n--service-account-issuer=https://old\r\n--api-audiences=https://old,sts\r\n--b=2\r\n--service-account-key-file=/k\r\n--service-account-signing-key-file=/s"
        );
    }

    #[test]
    fn moves_an_issuer_and_collapses_signing_keys() {
        let text = "--service-account-issuer=https://a\n--service-account-issuer=https://b\n--service-account-signing-key-file=/1\n--service-account-signing-key-file=/2\n--api-audiences=x\n--api-audiences=y\n";
        let target = SaState {
            issuers: vec!["https://b".into(), "https://a".into()],
            key_files: vec![],
            signing_key_file: Some("/3".into()),
            api_audiences: vec!["x".into(), "y".into()],
        };
        assert_eq!(
            run(text, &target),
            "--service-account-issuer=https://b\n--service-account-issuer=https://a\n--service-account-signing-key-file=/3\n--api-audiences=x\n--api-audiences=y\n"
        );
    }

    #[test]
    fn empty_text_gets_appended_lines() {
        let target = SaState {
            issuers: vec!["https://a".into()],
            key_files: vec!["/k".into()],
            signing_key_file: Some("/s".into()),
            api_audiences: vec!["https://a".into()],
        };
        assert_eq!(
            run("", &target),
            "--service-account-issuer=https://a\n--api-audiences=https://a\n--service-account-key-file=/k\n--service-account-signing-key-file=/s\n"
        );
    }

    #[test]
    fn no_change_means_no_edit() {
        let text = "--service-account-issuer=https://a\n--api-audiences=https://a\n";
        let items = items_of(text);
        let target = SaState {
            issuers: vec!["https://a".into()],
            api_audiences: vec!["https://a".into()],
            ..SaState::default()
        };
        assert!(plan(&items, &target).is_empty());
    }
}
