//! Locating YAML block sequences in text, line by line, so that their items
//! can be edited without re-serialising the document.

use anyhow::{anyhow, Result};
use serde::de::DeserializeOwned;

use super::lines::{Item, Lines, Render, Token};

/// `text` parsed as YAML; errors name `path` and the line. A duplicate key,
/// which the parser reports at the start of its mapping, also gets the lines
/// the key is written on.
pub fn parse<T: DeserializeOwned>(path: &str, text: &str) -> Result<T> {
    serde_norway::from_str(text).map_err(|e| {
        let dup_lines = duplicate_key_lines(text, &e);
        let err = anyhow::Error::new(e);
        let err = match dup_lines {
            Some((key, lines)) => err.context(format!(
                "`{key}:` is written {} times in one mapping, on lines {}",
                lines.len(),
                lines
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => err,
        };
        err.context(format!("{path} is not valid YAML"))
    })
}

fn duplicate_key_lines(text: &str, e: &serde_norway::Error) -> Option<(String, Vec<usize>)> {
    let msg = e.to_string();
    let key = msg
        .split_once("duplicate entry with key \"")?
        .1
        .split_once('"')?
        .0
        .to_string();
    let loc = e.location()?;
    let col = loc.column().checked_sub(1)?;
    let lines = Lines::parse(text);
    let all: Vec<&str> = lines.iter().collect();
    let start = loc.line().checked_sub(1)?;
    let mut found = Vec::new();
    for (i, l) in all.iter().enumerate().skip(start) {
        let t = l.trim_start();
        if i > start && !(t.is_empty() || t.starts_with('#')) && l.len() - t.len() < col {
            break;
        }
        let at_key = l.get(col..).is_some_and(|r| {
            [key.as_str(), &format!("\"{key}\""), &format!("'{key}'")]
                .iter()
                .any(|k| {
                    r.strip_prefix(k)
                        .is_some_and(|r| r.trim_start().starts_with(':'))
                })
        });
        if at_key {
            found.push(i + 1);
        }
    }
    (found.len() > 1).then_some((key, found))
}

/// A `command:` / `args:` key followed by a block sequence, as written.
pub struct Block {
    /// The key as written, without the colon (`command`, `kube-apiserver-arg+`).
    pub key: String,
    /// 0-based line of the key.
    pub key_line: usize,
    /// The items; empty when the key has no block sequence under it.
    pub items: Vec<Token>,
}

/// Every `key:` among `keys` (as written, so `kube-apiserver-arg+` is its own
/// key) that is followed by a block sequence of one-line scalars.
pub fn block_sequences(text: &str, keys: &[&str]) -> Vec<Block> {
    let lines = Lines::parse(text);
    let all: Vec<&str> = lines.iter().collect();
    let mut blocks = Vec::new();
    for (i, line) in all.iter().enumerate() {
        let body = line.trim_start();
        let body = body.strip_prefix("- ").map(str::trim_start).unwrap_or(body);
        let key = keys.iter().find(|k| {
            body.strip_prefix(**k)
                .and_then(|r| r.strip_prefix(':'))
                .is_some_and(|r| r.trim().is_empty() || r.trim_start().starts_with('#'))
        });
        let Some(key) = key else { continue };
        let key_col = line.len() - body.len();
        let mut items = Vec::new();
        let mut item_col = None;
        for (j, l) in all.iter().enumerate().skip(i + 1) {
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let col = l.len() - t.len();
            let Some(rest) = t
                .strip_prefix('-')
                .filter(|r| r.is_empty() || r.starts_with(' '))
            else {
                break;
            };
            if col < key_col || item_col.is_some_and(|c| c != col) {
                break;
            }
            item_col = Some(col);
            let rest_trim = rest.trim_start();
            let prefix_len = l.len() - rest_trim.len();
            match scalar(rest_trim) {
                Some((value, open, close)) => items.push(Token {
                    text: value,
                    line: j,
                    prefix: format!("{}{}", &l[..prefix_len], open),
                    suffix: close.to_string(),
                }),
                None => {
                    items.clear();
                    break;
                }
            }
        }
        if !items.is_empty() {
            blocks.push(Block {
                key: key.to_string(),
                key_line: i,
                items,
            });
        }
    }
    blocks
}

/// A one-line YAML scalar: (value, opening quote, closing quote + rest).
pub fn scalar(s: &str) -> Option<(String, &'static str, &str)> {
    if let Some(inner) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Some((out, "\"", &inner[i..])),
                '\\' => match chars.next()?.1 {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    c @ ('"' | '\\' | '/' | ' ') => out.push(c),
                    _ => return None,
                },
                c => out.push(c),
            }
        }
        None
    } else if let Some(inner) = s.strip_prefix('\'') {
        let mut out = String::new();
        let mut rest = inner;
        loop {
            let q = rest.find('\'')?;
            out.push_str(&rest[..q]);
            if rest[q + 1..].starts_with('\'') {
                out.push('\'');
                rest = &rest[q + 2..];
            } else {
                return Some((out, "'", &rest[q..]));
            }
        }
    } else {
        if s.starts_with(['|', '>', '&', '*', '!', '[', '{']) {
            return None;
        }
        let end = s.find(" #").unwrap_or(s.len());
        let value = s[..end].trim_end();
        Some((value.to_string(), "", &s[value.len()..]))
    }
}

/// The quote a list item opens with, if any.
pub fn opening_quote(prefix: &str) -> Option<char> {
    prefix.chars().last().filter(|c| *c == '"' || *c == '\'')
}

/// `text` escaped for the inside of a scalar opened with `quote`.
pub fn escape_for(quote: Option<char>, text: &str) -> String {
    match quote {
        Some('"') => text.replace('\\', "\\\\").replace('"', "\\\""),
        Some(_) => text.replace('\'', "''"),
        None => text.to_string(),
    }
}

/// Would this plain scalar read back as something else?
fn needs_quotes(s: &str) -> bool {
    s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || s.contains(['\t', '"', '\'', '\n'])
        || s.ends_with(' ')
}

/// Writes `--name=value` as a block-list item styled like another item of
/// the list (indentation, quoting): a manifest's `command:`, k0s `rawArgs`.
pub struct ListItemRender {
    /// What the list is, for the error when it has no item to copy.
    pub list: &'static str,
}

impl Render for ListItemRender {
    fn render(
        &self,
        like: Option<&Item>,
        name: &str,
        value: &str,
        keep_suffix: bool,
    ) -> Result<String> {
        let like = like
            .ok_or_else(|| anyhow!("{} is empty: no item to write a new flag like", self.list))?;
        let arg = format!("--{name}={value}");
        let quote = opening_quote(&like.prefix);
        let body = match quote {
            None if needs_quotes(&arg) => format!("\"{}\"", escape_for(Some('"'), &arg)),
            q => escape_for(q, &arg),
        };
        let suffix = match (keep_suffix, quote) {
            (true, _) => like.suffix.clone(),
            (false, Some(q)) => q.to_string(),
            (false, None) => String::new(),
        };
        Ok(format!("{}{}{}", like.prefix, body, suffix))
    }
}
