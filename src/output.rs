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

    /// Append a line of human output.
    pub fn line(&mut self, text: impl AsRef<str>) -> &mut Self {
        self.human.push_str(text.as_ref());
        self.human.push('\n');
        self
    }
}

/// The one-line cause followed by the chain, as printed on failure.
pub fn error_chain(err: &anyhow::Error) -> Vec<String> {
    err.chain().map(|c| c.to_string()).collect()
}
