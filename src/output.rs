//! What a command hands back to `main`: a JSON object for `--output json` and
//! the text for humans. Commands never print results themselves.

use serde_json::{Map, Value};

/// Exit codes, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success, whether or not anything changed.
    Ok = 0,
    /// Failure; nothing was changed (or every change was undone).
    Failed = 1,
    /// The command line was invalid (clap's own code).
    Usage = 2,
    /// A step after writing failed (restart, health, verify); the old files
    /// were put back and the apiserver is healthy on them again.
    RolledBack = 3,
    /// A step after writing failed and the rollback did not bring the
    /// apiserver back: the node needs attention.
    RollbackFailed = 4,
    /// Changed but not finished: the command changed files (its report lists
    /// them) and a later step failed, e.g. `rollback` restored the files but
    /// could not restart the apiserver on them.
    Incomplete = 5,
}

/// A failure whose kind picks the exit code, with fields for the JSON report.
/// Attach it with `cause.context(Failure { .. })`: the message comes first,
/// the cause's chain after it.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    pub json: Map<String, Value>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    /// The Failure carried by `err`, if any.
    pub fn of(err: &anyhow::Error) -> Option<&Failure> {
        err.downcast_ref::<Failure>()
    }
}

/// The result of a successful command.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The JSON object printed with `--output json`.
    pub json: Map<String, Value>,
    /// The text printed for humans (stdout).
    pub human: String,
    /// When set, printed to stdout verbatim in every output mode (for
    /// `discovery --jwks-only`, whose stdout is the document itself).
    pub raw_stdout: Option<String>,
}

impl Outcome {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set a JSON field.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.json.insert(key.to_string(), value.into());
        self
    }

    /// Append a line of human output (secrets recognisable by their content
    /// masked, in case it quotes a file: see [`crate::redact::free_text`]).
    pub fn line(&mut self, text: impl AsRef<str>) -> &mut Self {
        self.human
            .push_str(&crate::redact::free_text(text.as_ref()));
        self.human.push('\n');
        self
    }

    /// Append `text` wrapped to `width` columns: the first line starts with
    /// `label`, the others are indented by `indent` spaces.
    pub fn wrapped(&mut self, label: &str, indent: usize, text: &str, width: usize) -> &mut Self {
        for l in wrap(label, indent, text, width) {
            self.line(l);
        }
        self
    }
}

/// The width human output is wrapped to: the terminal's when stdout is one,
/// else `$COLUMNS`, else 80; never below 40.
pub fn width() -> usize {
    let cols = terminal_size::terminal_size_of(std::io::stdout())
        .map(|(w, _)| usize::from(w.0))
        .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
        .unwrap_or(80);
    cols.max(40)
}

/// `text` in lines of at most `width` columns (a longer word stays whole on
/// its own line): the first starts with `label`, the others with `indent`
/// spaces. Line breaks in `text` are kept.
pub fn wrap(label: &str, indent: usize, text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = label.to_string();
    let mut empty = true;
    let pad = " ".repeat(indent);
    for (n, para) in text.split('\n').enumerate() {
        if n > 0 {
            out.push(std::mem::replace(&mut line, pad.clone()));
            empty = true;
        }
        for word in para.split_whitespace() {
            let len = line.chars().count();
            if !empty && len + 1 + word.chars().count() > width {
                out.push(std::mem::replace(&mut line, pad.clone()));
                empty = true;
            }
            if !empty {
                line.push(' ');
            }
            line.push_str(word);
            empty = false;
        }
    }
    out.push(line);
    out
}

/// The one-line cause followed by the chain, as printed on failure. Each
/// cause once: a link whose text an earlier one already holds (libraries
/// often repeat their source in their own message) is left out; secrets
/// recognisable by their content are masked (a cause may quote a file).
pub fn error_chain(err: &anyhow::Error) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for text in err
        .chain()
        .map(|c| crate::redact::free_text(&c.to_string()))
    {
        if !text.is_empty() && !out.iter().any(|kept| kept.contains(&text)) {
            out.push(text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_and_indents() {
        let got = wrap("why: ", 4, "one two three four five six", 14);
        assert_eq!(got, ["why: one two", "    three four", "    five six"]);
        assert!(got.iter().all(|l| l.chars().count() <= 14));
        assert_eq!(
            wrap("x ", 2, "averyveryverylongword b", 8),
            ["x averyveryverylongword", "  b"]
        );
        assert_eq!(wrap("", 0, "", 10), [""]);
    }

    #[test]
    fn lines_mask_private_keys_and_jwts() {
        let mut o = Outcome::new();
        o.line("t eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln");
        o.line("-----BEGIN PRIVATE KEY-----");
        assert_eq!(o.human, "t <redacted>\n<redacted private key>\n");
    }

    #[test]
    fn each_cause_appears_once() {
        // The shape of rustls' error as kube-rs wraps it: each link repeats
        // the ones below it.
        let inner = anyhow::anyhow!("invalid peer certificate: UnsupportedCertVersion");
        let err = inner
            .context("invalid private key: invalid peer certificate: UnsupportedCertVersion")
            .context(
                "rustls tls error: invalid private key: invalid peer certificate: UnsupportedCertVersion",
            )
            .context("building an apiserver client from /etc/kubernetes/admin.conf");
        assert_eq!(
            error_chain(&err),
            [
                "building an apiserver client from /etc/kubernetes/admin.conf",
                "rustls tls error: invalid private key: invalid peer certificate: UnsupportedCertVersion",
            ]
        );
        // Distinct causes all stay, in order.
        let err = anyhow::anyhow!("permission denied")
            .context("writing /etc/a")
            .context("apply failed");
        assert_eq!(
            error_chain(&err),
            ["apply failed", "writing /etc/a", "permission denied"]
        );
    }
}
