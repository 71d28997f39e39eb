//! The convergence rules of design.md, as one pure function.

use super::{dedup_keep_first, SaState};

/// What the operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The issuer that must sign new tokens.
    pub issuer: String,
    /// Audiences to accept in addition to every currently effective one.
    pub audiences: Vec<String>,
    /// The signing key file; `None` keeps the current one.
    pub signing_key_file: Option<String>,
    /// Key files to accept tokens from in addition to the current ones (the
    /// public half of a new signing key goes here).
    pub extra_key_files: Vec<String>,
}

/// Converge `current` to `desired`:
/// - issuers := [I] + (current issuers minus I), order kept, no duplicates;
/// - api-audiences := current effective audiences + A, deduplicated, explicit;
/// - key files := current key files + extra key files, deduplicated;
/// - signing key := S (or the current one), exactly one.
pub fn converge(current: &SaState, desired: &Desired) -> SaState {
    let issuers = dedup_keep_first(
        std::iter::once(desired.issuer.clone()).chain(
            current
                .issuers
                .iter()
                .filter(|i| **i != desired.issuer)
                .cloned(),
        ),
    );
    // An empty audience (pflag keeps the middle field of `a,,b`) matches no
    // token's `aud`; it is not carried over.
    let mut api_audiences = dedup_keep_first(
        current
            .effective_audiences()
            .into_iter()
            .chain(desired.audiences.iter().cloned())
            .filter(|a| !a.is_empty()),
    );
    if api_audiences.is_empty() {
        // Nothing was accepted before (no issuer at all) and nothing is asked
        // for: the apiserver would default to the new issuers; say so explicitly
        // so that the next run sees the same list.
        api_audiences = issuers.clone();
    }
    let key_files = dedup_keep_first(
        current
            .key_files
            .iter()
            .cloned()
            .chain(desired.extra_key_files.iter().cloned()),
    );
    let signing_key_file = desired
        .signing_key_file
        .clone()
        .or_else(|| current.signing_key_file.clone());
    SaState {
        issuers,
        key_files,
        signing_key_file,
        api_audiences,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn desired(issuer: &str) -> Desired {
        Desired {
            issuer: issuer.into(),
            audiences: vec!["sts.amazonaws.com".into()],
            signing_key_file: None,
            extra_key_files: vec![],
        }
    }

    #[test]
    fn kubeadm_default_to_public_issuer() {
        let cur = SaState {
            issuers: vec!["https://kubernetes.default.svc.cluster.local".into()],
            key_files: vec!["/etc/kubernetes/pki/sa.pub".into()],
            signing_key_file: Some("/etc/kubernetes/pki/sa.key".into()),
            api_audiences: vec![],
        };
        let out = converge(&cur, &desired("https://oidc.example.com"));
        assert_eq!(
            out.issuers,
            [
                "https://oidc.example.com",
                "https://kubernetes.default.svc.cluster.local"
            ]
        );
        assert_eq!(
            out.api_audiences,
            [
                "https://kubernetes.default.svc.cluster.local",
                "sts.amazonaws.com"
            ],
            "old default audience (the old issuer) kept, written explicitly"
        );
        assert_eq!(out.key_files, cur.key_files);
        assert_eq!(out.signing_key_file, cur.signing_key_file);
    }

    #[test]
    fn second_change_keeps_every_issuer() {
        let cur = SaState {
            issuers: vec!["https://b".into(), "https://a".into()],
            key_files: vec![],
            signing_key_file: None,
            api_audiences: vec!["https://a".into(), "sts.amazonaws.com".into()],
        };
        let out = converge(&cur, &desired("https://c"));
        assert_eq!(out.issuers, ["https://c", "https://b", "https://a"]);
        assert_eq!(out.api_audiences, ["https://a", "sts.amazonaws.com"]);
    }

    #[test]
    fn empty_audiences_are_not_carried_over() {
        let cur = SaState {
            issuers: vec!["https://a".into()],
            key_files: vec![],
            signing_key_file: None,
            api_audiences: vec!["".into(), "x".into(), "".into()],
        };
        let out = converge(&cur, &desired("https://c"));
        assert_eq!(out.api_audiences, ["x", "sts.amazonaws.com"]);
    }

    #[test]
    fn existing_issuer_moves_to_front() {
        let cur = SaState {
            issuers: vec!["https://a".into(), "https://b".into()],
            ..SaState::default()
        };
        let out = converge(&cur, &desired("https://b"));
        assert_eq!(out.issuers, ["https://b", "https://a"]);
    }

    fn value() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "https://a",
            "https://b",
            "https://c",
            "x",
            "sts.amazonaws.com",
            "/k1",
            "/k2",
        ])
        .prop_map(String::from)
    }

    fn state() -> impl Strategy<Value = SaState> {
        (
            prop::collection::vec(value(), 0..5),
            prop::collection::vec(value(), 0..5),
            prop::option::of(value()),
            prop::collection::vec(value(), 0..5),
        )
            .prop_map(
                |(issuers, key_files, signing_key_file, api_audiences)| SaState {
                    issuers,
                    key_files,
                    signing_key_file,
                    api_audiences,
                },
            )
    }

    fn desired_strategy() -> impl Strategy<Value = Desired> {
        (
            value(),
            prop::collection::vec(value(), 0..3),
            prop::option::of(value()),
            prop::collection::vec(value(), 0..3),
        )
            .prop_map(
                |(issuer, audiences, signing_key_file, extra_key_files)| Desired {
                    issuer,
                    audiences,
                    signing_key_file,
                    extra_key_files,
                },
            )
    }

    fn has_duplicates(v: &[String]) -> bool {
        v.iter().enumerate().any(|(i, x)| v[..i].contains(x))
    }

    proptest! {
        #[test]
        fn convergence_properties(cur in state(), d in desired_strategy()) {
            let out = converge(&cur, &d);
            // The desired issuer signs.
            prop_assert_eq!(out.issuers.first(), Some(&d.issuer));
            // Nothing previously accepted is lost.
            for i in &cur.issuers { prop_assert!(out.issuers.contains(i)); }
            for k in &cur.key_files { prop_assert!(out.key_files.contains(k)); }
            for k in &d.extra_key_files { prop_assert!(out.key_files.contains(k)); }
            let aud = out.effective_audiences();
            for a in cur.effective_audiences() { prop_assert!(aud.contains(&a)); }
            for a in &d.audiences { prop_assert!(aud.contains(a)); }
            // Audiences are always written explicitly.
            prop_assert!(!out.api_audiences.is_empty());
            // No duplicates.
            prop_assert!(!has_duplicates(&out.issuers));
            prop_assert!(!has_duplicates(&out.key_files));
            prop_assert!(!has_duplicates(&out.api_audiences));
            // Signing key: the desired one, else the current one.
            prop_assert_eq!(&out.signing_key_file, &d.signing_key_file.clone().or(cur.signing_key_file.clone()));
            // Old issuers keep their relative order.
            let old: Vec<_> = cur.issuers.iter().filter(|i| **i != d.issuer).collect();
            let kept: Vec<_> = out.issuers[1..].iter().collect();
            let mut dedup_old = Vec::new();
            for i in old { if !dedup_old.contains(&i) { dedup_old.push(i); } }
            prop_assert_eq!(kept, dedup_old);
            // Idempotent.
            prop_assert_eq!(converge(&out, &d), out);
        }
    }
}
