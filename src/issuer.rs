//! Issuer URL validation shared by `apply`, `discovery` and `aws`.
//!
//! kube-apiserver serves discovery only for an https issuer without query or
//! fragment; AWS IAM additionally rejects a port and matches the URL exactly.

use std::fmt;

use anyhow::{bail, Result};
use url::Url;

/// A validated issuer URL, kept exactly as the user wrote it (the apiserver
/// compares issuers as plain strings, so no normalisation is applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    raw: String,
    host_and_path: String,
    /// Things worth telling the operator that are not errors.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IssuerError {
    #[error("issuer {0:?} has leading or trailing whitespace")]
    Whitespace(String),
    #[error("issuer {0:?} is not a URL: {1}")]
    NotUrl(String, String),
    #[error("issuer {0:?} must use https:// (AWS, GCP and Azure fetch discovery over HTTPS only)")]
    NotHttps(String),
    #[error("issuer {0:?} has a query string; the apiserver serves discovery only for issuers without one")]
    Query(String),
    #[error(
        "issuer {0:?} has a fragment; the apiserver serves discovery only for issuers without one"
    )]
    Fragment(String),
    #[error("issuer {0:?} carries user credentials")]
    Credentials(String),
    #[error("issuer {0:?} has a port; AWS IAM rejects OIDC providers with a port (pass --allow-port for non-AWS use)")]
    Port(String),
}

impl Issuer {
    /// Validate `raw`. A port is an error unless `allow_port`, then a warning.
    pub fn parse(raw: &str, allow_port: bool) -> Result<Self, IssuerError> {
        let own = || raw.to_string();
        if raw.trim() != raw || raw.is_empty() {
            return Err(IssuerError::Whitespace(own()));
        }
        if raw.chars().any(char::is_whitespace) {
            return Err(IssuerError::NotUrl(own(), "it contains whitespace".into()));
        }
        let url = Url::parse(raw).map_err(|e| IssuerError::NotUrl(own(), e.to_string()))?;
        if url.scheme() != "https" {
            return Err(IssuerError::NotHttps(own()));
        }
        if url.query().is_some() || raw.contains('?') {
            return Err(IssuerError::Query(own()));
        }
        if url.fragment().is_some() || raw.contains('#') {
            return Err(IssuerError::Fragment(own()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(IssuerError::Credentials(own()));
        }
        let mut warnings = Vec::new();
        if url.port().is_some() {
            if !allow_port {
                return Err(IssuerError::Port(own()));
            }
            warnings.push(format!(
                "issuer {raw} has a port: AWS IAM will not accept it as an OIDC provider"
            ));
        }
        if raw.ends_with('/') {
            warnings.push(format!(
                "issuer {raw} ends with '/': the token's iss, the discovery document's issuer and \
                 the cloud provider's URL must all carry it exactly so"
            ));
        }
        let host_and_path = raw["https://".len()..].to_string();
        Ok(Issuer {
            raw: raw.to_string(),
            host_and_path,
            warnings,
        })
    }

    /// `parse` for the `--issuer` flag: the error names the flag.
    pub fn from_flag(raw: &str, allow_port: bool) -> anyhow::Result<Self> {
        Self::parse(raw, allow_port).map_err(|e| anyhow::anyhow!("--issuer: {e}"))
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The issuer without `https://`: the prefix of AWS condition keys
    /// (`<host/path>:sub`, `<host/path>:aud`).
    pub fn host_and_path(&self) -> &str {
        &self.host_and_path
    }

    /// The issuer with any trailing slashes removed, for building URLs under it.
    pub fn base(&self) -> &str {
        self.raw.trim_end_matches('/')
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Two issuers that differ only by trailing slashes: the apiserver treats them
/// as different issuers, users almost never mean that.
pub fn differ_only_by_trailing_slash(a: &str, b: &str) -> bool {
    a != b && a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// One `--audience` value: what the apiserver can hold as one audience.
pub fn check_audience(a: &str) -> Result<()> {
    if a.is_empty() || a.trim() != a || a.chars().any(char::is_whitespace) {
        bail!("--audience {a:?}: an audience must be non-empty and contain no whitespace");
    }
    if a.contains(',') {
        bail!("--audience {a:?}: the apiserver splits --api-audiences on commas; pass each audience with its own --audience");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn audiences_must_be_single_values() {
        check_audience("sts.amazonaws.com").unwrap();
        for bad in ["", " a", "a,b", "a b"] {
            let e = check_audience(bad).unwrap_err().to_string();
            assert!(e.starts_with("--audience"), "{e}");
        }
    }

    use super::*;

    #[test]
    fn accepts_plain_https_with_path() {
        let i = Issuer::parse("https://oidc.example.com/cluster-a", false).unwrap();
        assert_eq!(i.as_str(), "https://oidc.example.com/cluster-a");
        assert_eq!(i.host_and_path(), "oidc.example.com/cluster-a");
        assert!(i.warnings.is_empty());
    }

    #[test]
    fn rejects_what_the_apiserver_or_aws_rejects() {
        use IssuerError::*;
        type Expect = fn(&IssuerError) -> bool;
        let cases: [(&str, Expect); 7] = [
            ("http://x.example", |e| matches!(e, NotHttps(_))),
            (" https://x.example", |e| matches!(e, Whitespace(_))),
            ("https://x.example\n", |e| matches!(e, Whitespace(_))),
            ("https://x.example/?a=b", |e| matches!(e, Query(_))),
            ("https://x.example/#frag", |e| matches!(e, Fragment(_))),
            ("https://x.example:8443", |e| matches!(e, Port(_))),
            ("not a url", |e| matches!(e, NotUrl(..))),
        ];
        for (raw, want) in cases {
            let err = Issuer::parse(raw, false).unwrap_err();
            assert!(want(&err), "{raw}: unexpected {err:?}");
        }
    }

    #[test]
    fn port_is_a_warning_when_allowed_and_slash_always_warns() {
        let i = Issuer::parse("https://x.example:8443/", true).unwrap();
        assert_eq!(i.warnings.len(), 2);
        assert_eq!(i.base(), "https://x.example:8443");
    }

    #[test]
    fn trailing_slash_twins() {
        assert!(differ_only_by_trailing_slash("https://a/x", "https://a/x/"));
        assert!(!differ_only_by_trailing_slash("https://a/x", "https://a/x"));
        assert!(!differ_only_by_trailing_slash(
            "https://a/x",
            "https://a/y/"
        ));
    }
}
