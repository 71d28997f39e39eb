//! The kube-apiserver service-account flag model and the convergence rules.
//!
//! Pure: no I/O. The semantics follow pflag as kube-apiserver registers these
//! flags (`pkg/kubeapiserver/options/authentication.go`):
//! - `--service-account-issuer`: StringArray, each use appends, the FIRST signs;
//! - `--service-account-key-file`: StringArray, each use appends;
//! - `--service-account-signing-key-file`: string, the LAST use wins;
//! - `--api-audiences`: StringSlice, each use read as one CSV record
//!   (`readAsCSV`, see [`csv`]), appends; when empty the apiserver defaults it
//!   to all issuers.

mod converge;
pub mod csv;

pub use converge::{converge, Desired};
pub use csv::{read_csv, write_csv};

use std::fmt;

use serde::Serialize;

pub const ISSUER: &str = "service-account-issuer";
pub const KEY_FILE: &str = "service-account-key-file";
pub const SIGNING_KEY_FILE: &str = "service-account-signing-key-file";
pub const API_AUDIENCES: &str = "api-audiences";

/// The four flags irsa-agent manages.
pub const MANAGED: [&str; 4] = [ISSUER, KEY_FILE, SIGNING_KEY_FILE, API_AUDIENCES];

/// Where a value comes from: a line of a file, or a distribution's built-in default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Source {
    Line { file: String, line: usize },
    Default { default: String },
}

impl Source {
    pub fn line(file: impl Into<String>, line: usize) -> Self {
        Source::Line {
            file: file.into(),
            line,
        }
    }
    pub fn default_of(what: impl Into<String>) -> Self {
        Source::Default {
            default: what.into(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Line { file, line } => write!(f, "{file}:{line}"),
            Source::Default { default } => write!(f, "{default} default"),
        }
    }
}

/// One `--name=value` the apiserver receives, in order, with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    /// Flag name without leading dashes.
    pub name: String,
    pub value: String,
    pub source: Source,
}

impl Arg {
    pub fn new(name: impl Into<String>, value: impl Into<String>, source: Source) -> Self {
        Arg {
            name: name.into(),
            value: value.into(),
            source,
        }
    }
}

/// A value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced {
    pub value: String,
    pub source: Source,
}

/// The service-account settings the apiserver runs with, each value with its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    pub issuers: Vec<Sourced>,
    pub key_files: Vec<Sourced>,
    pub signing_key_file: Option<Sourced>,
    /// The explicit `--api-audiences` values, empty when unset.
    pub explicit_audiences: Vec<Sourced>,
}

impl Effective {
    /// Read the four managed flags from an argument list by pflag's rules.
    pub fn from_args(args: &[Arg]) -> Self {
        let mut eff = Effective::default();
        for arg in args {
            let name = normalize(&arg.name);
            let sourced = || Sourced {
                value: arg.value.clone(),
                source: arg.source.clone(),
            };
            match name.as_str() {
                ISSUER => eff.issuers.push(sourced()),
                KEY_FILE => eff.key_files.push(sourced()),
                SIGNING_KEY_FILE => eff.signing_key_file = Some(sourced()),
                // A value that is not valid CSV stops kube-apiserver; the
                // format readers refuse it (`check_audience_values`), here it
                // is taken whole.
                API_AUDIENCES => eff.explicit_audiences.extend(
                    read_csv(&arg.value)
                        .unwrap_or_else(|_| vec![arg.value.clone()])
                        .into_iter()
                        .map(|value| Sourced {
                            value,
                            source: arg.source.clone(),
                        }),
                ),
                _ => {}
            }
        }
        eff
    }

    /// The audiences tokens are accepted for: the explicit list, or every issuer.
    pub fn audiences(&self) -> Vec<Sourced> {
        if self.explicit_audiences.is_empty() {
            self.issuers
                .iter()
                .map(|i| Sourced {
                    value: i.value.clone(),
                    source: i.source.clone(),
                })
                .collect()
        } else {
            self.explicit_audiences.clone()
        }
    }

    /// The values alone.
    pub fn state(&self) -> SaState {
        let vals = |v: &[Sourced]| v.iter().map(|s| s.value.clone()).collect::<Vec<_>>();
        SaState {
            issuers: vals(&self.issuers),
            key_files: vals(&self.key_files),
            signing_key_file: self.signing_key_file.as_ref().map(|s| s.value.clone()),
            api_audiences: vals(&self.explicit_audiences),
        }
    }
}

/// Every `--api-audiences` value in `args` is one valid CSV record, as
/// kube-apiserver requires to start: the error names the file and line.
pub fn check_audience_values(args: &[Arg]) -> anyhow::Result<()> {
    for arg in args {
        if normalize(&arg.name) == API_AUDIENCES {
            if let Err(e) = read_csv(&arg.value) {
                anyhow::bail!(
                    "{}: --{API_AUDIENCES}={:?} would stop kube-apiserver: {e}",
                    arg.source,
                    arg.value
                );
            }
        }
    }
    Ok(())
}

/// The managed flags' values, in the order the apiserver reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SaState {
    pub issuers: Vec<String>,
    pub key_files: Vec<String>,
    pub signing_key_file: Option<String>,
    /// Explicit `--api-audiences`; empty means "unset" (defaults to the issuers).
    pub api_audiences: Vec<String>,
}

impl SaState {
    /// The audiences tokens are accepted for.
    pub fn effective_audiences(&self) -> Vec<String> {
        if self.api_audiences.is_empty() {
            self.issuers.clone()
        } else {
            self.api_audiences.clone()
        }
    }

    /// The issuer that signs new tokens.
    pub fn signing_issuer(&self) -> Option<&str> {
        self.issuers.first().map(String::as_str)
    }

    /// The managed flags as `--name=value` arguments in a canonical order
    /// (issuers, audiences, key files, signing key).
    pub fn to_args(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        out.extend(self.issuers.iter().map(|v| (ISSUER, v.clone())));
        if !self.api_audiences.is_empty() {
            out.push((API_AUDIENCES, write_csv(&self.api_audiences)));
        }
        out.extend(self.key_files.iter().map(|v| (KEY_FILE, v.clone())));
        if let Some(s) = &self.signing_key_file {
            out.push((SIGNING_KEY_FILE, s.clone()));
        }
        out
    }
}

/// Remove later duplicates, keeping first occurrences in order.
pub fn dedup_keep_first(values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Split `--name=value` / `--name` into (name, Some(value)) / (name, None).
/// Returns None for anything that is not a long flag.
pub fn split_flag(token: &str) -> Option<(&str, Option<&str>)> {
    let body = token.strip_prefix("--")?;
    if body.is_empty() {
        return None;
    }
    Some(match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    })
}

/// kube-apiserver's flag-name normalisation: `_` is read as `-`.
pub fn normalize(name: &str) -> String {
    name.replace('_', "-")
}

/// Is this one of the managed flags (which always take a value)?
pub fn is_managed(name: &str) -> bool {
    MANAGED.contains(&name)
}

/// A kubeadm-style target shared by tests: a new issuer before the default
/// one, an added key file, a new signing key, the AWS audience added.
#[cfg(test)]
pub fn sample_kubeadm_target() -> SaState {
    SaState {
        issuers: vec![
            "https://oidc.example.com".into(),
            "https://kubernetes.default.svc.cluster.local".into(),
        ],
        key_files: vec![
            "/etc/kubernetes/pki/sa.pub".into(),
            "/etc/kubernetes/pki/new.pub".into(),
        ],
        signing_key_file: Some("/etc/kubernetes/pki/new.key".into()),
        api_audiences: vec![
            "https://kubernetes.default.svc.cluster.local".into(),
            "sts.amazonaws.com".into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(n: &str, v: &str, line: usize) -> Arg {
        Arg::new(n, v, Source::line("f", line))
    }

    #[test]
    fn pflag_rules() {
        let eff = Effective::from_args(&[
            arg(ISSUER, "https://a", 1),
            arg(SIGNING_KEY_FILE, "/one", 2),
            arg(ISSUER, "https://b", 3),
            arg(SIGNING_KEY_FILE, "/two", 4),
            arg(KEY_FILE, "/k1", 5),
            arg(KEY_FILE, "/k2", 6),
        ]);
        let s = eff.state();
        assert_eq!(s.issuers, ["https://a", "https://b"]);
        assert_eq!(s.signing_issuer(), Some("https://a"));
        assert_eq!(
            s.signing_key_file.as_deref(),
            Some("/two"),
            "last signing key wins"
        );
        assert_eq!(eff.signing_key_file.unwrap().source, Source::line("f", 4));
        assert_eq!(s.key_files, ["/k1", "/k2"]);
        assert_eq!(
            s.effective_audiences(),
            ["https://a", "https://b"],
            "audiences default to issuers"
        );
    }

    #[test]
    fn audiences_split_on_commas_and_append() {
        let eff = Effective::from_args(&[
            arg(API_AUDIENCES, "x,y", 1),
            arg(API_AUDIENCES, "z", 2),
            arg(ISSUER, "https://a,b", 3),
        ]);
        assert_eq!(eff.state().api_audiences, ["x", "y", "z"]);
        assert_eq!(eff.state().issuers, ["https://a,b"], "issuer is not split");
        assert_eq!(eff.audiences()[2].source, Source::line("f", 2));
        let eff = Effective::from_args(&[arg(API_AUDIENCES, "\"a,b\",c,,d", 1)]);
        assert_eq!(
            eff.state().api_audiences,
            ["a,b", "c", "", "d"],
            "CSV: quotes group commas, an empty field is kept"
        );
        let bad = [arg(API_AUDIENCES, "x", 1), arg(API_AUDIENCES, "\"", 7)];
        let err = check_audience_values(&bad).unwrap_err().to_string();
        assert!(err.starts_with("f:7: --api-audiences="), "{err}");
        check_audience_values(&bad[..1]).unwrap();
    }

    #[test]
    fn empty_audiences_mean_unset() {
        let eff = Effective::from_args(&[arg(API_AUDIENCES, "", 1), arg(ISSUER, "https://a", 2)]);
        assert_eq!(eff.state().effective_audiences(), ["https://a"]);
    }

    #[test]
    fn flag_splitting() {
        assert_eq!(split_flag("--a=b=c"), Some(("a", Some("b=c"))));
        assert_eq!(split_flag("--a"), Some(("a", None)));
        assert_eq!(split_flag("-a"), None);
        assert_eq!(split_flag("kube-apiserver"), None);
    }

    #[test]
    fn underscores_name_the_same_flag() {
        let eff = Effective::from_args(&[arg("service_account_issuer", "https://a", 1)]);
        assert_eq!(eff.state().issuers, ["https://a"]);
    }
}
