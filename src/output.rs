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
