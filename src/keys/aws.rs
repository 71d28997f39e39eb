//! AWS IAM artifacts (pure): the `create-open-id-connect-provider` input and a
//! role trust policy for web-identity federation from the issuer.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Serialize as DeriveSerialize;

use crate::issuer::Issuer;

/// Left in the policy and ARNs for the operator to replace.
pub const ACCOUNT_ID: &str = "ACCOUNT_ID";
/// Where amazon-eks-pod-identity-webhook mounts the projected token.
pub const TOKEN_FILE: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
/// ServiceAccount annotation read by amazon-eks-pod-identity-webhook.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// `aws iam create-open-id-connect-provider --cli-input-json` input.
#[derive(Debug, Clone, PartialEq, Eq, DeriveSerialize)]
pub struct OidcProvider {
    #[serde(rename = "Url")]
    pub url: String,
    #[serde(rename = "ClientIDList")]
    pub client_id_list: Vec<String>,
    /// The SHA-1 of the top CA of the issuer's chain, or a placeholder (AWS
    /// ignores it for hosts whose certificate chains to a well-known CA).
    #[serde(rename = "ThumbprintList")]
    pub thumbprint_list: Vec<String>,
}

/// Who may assume the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// One service account: `StringEquals` on `sub`.
    ServiceAccount { namespace: String, name: String },
    /// Any service account of a namespace: `StringLike` on `sub`.
    Namespace(String),
}

impl Subject {
    /// The `sub` condition value.
    pub fn sub(&self) -> String {
        match self {
            Subject::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
            Subject::Namespace(ns) => format!("system:serviceaccount:{ns}:*"),
        }
    }
}

/// A JSON object whose keys keep insertion order (condition keys are dynamic).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ordered(pub Vec<(String, serde_json::Value)>);

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, DeriveSerialize)]
pub struct TrustPolicy {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statement: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq, DeriveSerialize)]
pub struct Statement {
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Principal")]
    pub principal: Principal,
    #[serde(rename = "Action")]
    pub action: &'static str,
    #[serde(rename = "Condition")]
    pub condition: Condition,
}

#[derive(Debug, Clone, PartialEq, Eq, DeriveSerialize)]
pub struct Principal {
    #[serde(rename = "Federated")]
    pub federated: String,
}

#[derive(Debug, Clone, PartialEq, Eq, DeriveSerialize)]
pub struct Condition {
    #[serde(rename = "StringEquals")]
    pub string_equals: Ordered,
    #[serde(rename = "StringLike", skip_serializing_if = "Option::is_none")]
    pub string_like: Option<Ordered>,
}

/// `arn:aws:iam::ACCOUNT_ID:oidc-provider/<issuer host+path>`.
pub fn provider_arn(issuer: &Issuer) -> String {
    format!(
        "arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{}",
        issuer.host_and_path()
    )
}

/// A thumbprint AWS accepts (40 hex digits) that pins nothing.
pub const PLACEHOLDER_THUMBPRINT: &str = "0000000000000000000000000000000000000000";

pub fn role_arn(role_name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT_ID}:role/{role_name}")
}

pub fn oidc_provider(issuer: &Issuer, audiences: &[String], thumbprint: &str) -> OidcProvider {
    OidcProvider {
        url: issuer.as_str().to_string(),
        client_id_list: audiences.to_vec(),
        thumbprint_list: vec![thumbprint.to_string()],
    }
}

/// The trust policy. `aud` is always matched exactly (`StringEquals`, so a
/// `*` in an audience is never a wildcard); `sub` with `StringEquals` for one
/// service account, `StringLike` for a namespace.
pub fn trust_policy(issuer: &Issuer, audiences: &[String], subject: &Subject) -> TrustPolicy {
    let prefix = issuer.host_and_path();
    let aud_value = match audiences {
        [one] => serde_json::Value::from(one.as_str()),
        many => serde_json::Value::from(many.to_vec()),
    };
    let sub = (
        format!("{prefix}:sub"),
        serde_json::Value::from(subject.sub()),
    );
    let aud = (format!("{prefix}:aud"), aud_value);
    let (string_equals, string_like) = match subject {
        Subject::ServiceAccount { .. } => (Ordered(vec![sub, aud]), None),
        Subject::Namespace(_) => (Ordered(vec![aud]), Some(Ordered(vec![sub]))),
    };
    TrustPolicy {
        version: "2012-10-17",
        statement: vec![Statement {
            effect: "Allow",
            principal: Principal {
                federated: provider_arn(issuer),
            },
            action: "sts:AssumeRoleWithWebIdentity",
            condition: Condition {
                string_equals,
                string_like,
            },
        }],
    }
}

/// A namespace name: an RFC 1123 label (this also keeps IAM wildcards `*`
/// and `?` out of the `StringLike` condition).
pub fn validate_namespace(ns: &str) -> anyhow::Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    anyhow::ensure!(
        ok,
        "--namespace {ns:?}: not a valid Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"
    );
    Ok(())
}

/// A ServiceAccount name: an RFC 1123 subdomain.
pub fn validate_service_account(sa: &str) -> anyhow::Result<()> {
    let ok = !sa.is_empty()
        && sa.len() <= 253
        && sa.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    anyhow::ensure!(
        ok,
        "--service-account {sa:?}: not a valid ServiceAccount name (lowercase letters, digits, '-' and '.')"
    );
    Ok(())
}

/// Audiences as IAM takes them: 1 to 100 client IDs of 1 to 255 characters;
/// duplicates dropped, order kept.
pub fn normalize_audiences(raw: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for a in raw {
        anyhow::ensure!(
            !a.is_empty() && a.chars().count() <= 255,
            "--audience {a:?}: IAM client IDs are 1 to 255 characters"
        );
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "--audience: at least one audience is needed"
    );
    anyhow::ensure!(
        out.len() <= 100,
        "--audience: IAM accepts at most 100 client IDs, got {}",
        out.len()
    );
    Ok(out)
}

/// A role name as IAM takes it: 1-64 of `[A-Za-z0-9+=,.@_-]`.
pub fn validate_role_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    anyhow::ensure!(
        ok,
        "--role-name {name:?}: IAM role names are 1 to 64 of letters, digits and +=,.@_-"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        Issuer::parse("https://oidc.example.com/c1", false).unwrap()
    }

    #[test]
    fn service_account_policy_is_string_equals_on_sub_and_aud() {
        let p = trust_policy(
            &issuer(),
            &["sts.amazonaws.com".into()],
            &Subject::ServiceAccount {
                namespace: "ns".into(),
                name: "app".into(),
            },
        );
        let v = serde_json::to_value(&p).unwrap();
        let st = &v["Statement"][0];
        assert_eq!(
            st["Principal"]["Federated"],
            "arn:aws:iam::ACCOUNT_ID:oidc-provider/oidc.example.com/c1"
        );
        assert_eq!(st["Action"], "sts:AssumeRoleWithWebIdentity");
        let eq = &st["Condition"]["StringEquals"];
        assert_eq!(
            eq["oidc.example.com/c1:sub"],
            "system:serviceaccount:ns:app"
        );
        assert_eq!(eq["oidc.example.com/c1:aud"], "sts.amazonaws.com");
        assert!(st["Condition"].get("StringLike").is_none());
    }

    #[test]
    fn namespace_policy_is_string_like_on_sub_only() {
        let p = trust_policy(
            &issuer(),
            &["a".into(), "b".into()],
            &Subject::Namespace("ns".into()),
        );
        let v = serde_json::to_value(&p).unwrap();
        let c = &v["Statement"][0]["Condition"];
        assert_eq!(
            c["StringLike"]["oidc.example.com/c1:sub"],
            "system:serviceaccount:ns:*"
        );
        assert_eq!(
            c["StringEquals"]["oidc.example.com/c1:aud"],
            serde_json::json!(["a", "b"])
        );
        assert!(c["StringEquals"].get("oidc.example.com/c1:sub").is_none());
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_namespace("kube-system").is_ok());
        assert!(validate_namespace("ns*").is_err());
        assert!(validate_namespace("Upper").is_err());
        assert!(validate_service_account("my.app-1").is_ok());
        assert!(validate_service_account("a?").is_err());
        assert!(validate_role_name("irsa-role_1").is_ok());
        assert!(validate_role_name("bad role").is_err());
        assert_eq!(
            normalize_audiences(&["a".into(), "b".into(), "a".into()]).unwrap(),
            vec!["a", "b"]
        );
        assert!(normalize_audiences(&["".into()]).is_err());
    }
}
