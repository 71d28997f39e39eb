//! What to put in kubeadm's ClusterConfiguration so that `kubeadm upgrade`
//! regenerates the same apiserver flags instead of dropping the edit.

use crate::flags::{SaState, API_AUDIENCES, ISSUER, KEY_FILE, SIGNING_KEY_FILE};

/// `apiServer.extraArgs` for kubeadm.k8s.io/v1beta4: a list of {name, value}
/// that may repeat a name.
pub fn v1beta4_extra_args(s: &SaState) -> String {
    let mut out = String::from("apiServer:\n  extraArgs:\n");
    for (name, value) in s.to_args() {
        out.push_str(&format!("  - name: {name}\n    value: {}\n", quote(&value)));
    }
    out
}

/// `apiServer.extraArgs` for kubeadm.k8s.io/v1beta3: a map, one value per flag.
pub fn v1beta3_extra_args(s: &SaState) -> String {
    let mut out = String::from("apiServer:\n  extraArgs:\n");
    let mut put = |name: &str, value: Option<&String>| {
        if let Some(v) = value {
            out.push_str(&format!("    {name}: {}\n", quote(v)));
        }
    };
    put(ISSUER, s.issuers.first());
    let aud = crate::flags::write_csv(&s.api_audiences);
    put(API_AUDIENCES, (!aud.is_empty()).then_some(&aud));
    put(KEY_FILE, s.key_files.last());
    put(SIGNING_KEY_FILE, s.signing_key_file.as_ref());
    out
}

/// kubeadm v1beta4 sorts extraArgs by name then value: the issuer that would
/// sign after an upgrade.
pub fn v1beta4_signing_issuer(s: &SaState) -> Option<&str> {
    s.issuers.iter().min().map(String::as_str)
}

/// Notes for the operator about the kubeadm-config ConfigMap.
pub fn notes(s: &SaState) -> Vec<String> {
    let mut notes = vec![format!(
        "to keep this change across `kubeadm upgrade`, edit the ClusterConfiguration in ConfigMap \
         kube-system/kubeadm-config (kubectl -n kube-system edit configmap kubeadm-config); for \
         kubeadm.k8s.io/v1beta4:\n{}for kubeadm.k8s.io/v1beta3 (one value per flag: only the new issuer and the \
         signing key's public half survive an upgrade, so older tokens stop verifying):\n{}",
        v1beta4_extra_args(s),
        v1beta3_extra_args(s)
    )];
    if let (Some(first), Some(sorted_first)) = (s.issuers.first(), v1beta4_signing_issuer(s)) {
        if first != sorted_first {
            notes.push(format!(
                "kubeadm v1beta4 sorts extraArgs by name then value: after `kubeadm upgrade` the issuer \
                 {sorted_first} would come first and sign instead of {first}; re-run irsa-agent apply after \
                 every upgrade"
            ));
        }
    }
    notes
}

/// The one piece of advice for this node after a change: what to do about
/// `kubeadm upgrade`, which regenerates the manifest and drops the edit.
pub fn advice(s: &SaState) -> String {
    match (s.issuers.first(), v1beta4_signing_issuer(s)) {
        (Some(first), Some(sorted_first)) if first != sorted_first => format!(
            "run irsa-agent apply again after every `kubeadm upgrade`: it rewrites this manifest from the \
             kubeadm-config ConfigMap, which cannot keep this order (kubeadm sorts the issuers there and \
             {sorted_first} would sign instead of {first})"
        ),
        _ => "`kubeadm upgrade` rewrites this manifest from the kubeadm-config ConfigMap: put the same flags in its \
              ClusterConfiguration apiServer.extraArgs (-v prints them), or run irsa-agent apply again after \
              every upgrade"
            .to_string(),
    }
}

fn quote(v: &str) -> String {
    serde_json::Value::String(v.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SaState {
        crate::flags::sample_kubeadm_target()
    }

    #[test]
    fn v1beta4_lists_every_value_and_parses() {
        let y = v1beta4_extra_args(&state());
        let v: serde_norway::Value = serde_norway::from_str(&y).unwrap();
        let list = v["apiServer"]["extraArgs"].as_sequence().unwrap();
        let issuers: Vec<_> = list
            .iter()
            .filter(|e| e["name"] == "service-account-issuer")
            .map(|e| e["value"].as_str().unwrap())
            .collect();
        assert_eq!(
            issuers,
            [
                "https://oidc.example.com",
                "https://kubernetes.default.svc.cluster.local"
            ]
        );
        assert_eq!(list.len(), 6);
    }

    #[test]
    fn v1beta3_has_one_value_per_flag() {
        let v: serde_norway::Value = serde_norway::from_str(&v1beta3_extra_args(&state())).unwrap();
        let m = v["apiServer"]["extraArgs"].as_mapping().unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(
            v["apiServer"]["extraArgs"]["service-account-key-file"],
            "/etc/kubernetes/pki/new.pub"
        );
    }

    #[test]
    fn warns_when_sorting_would_change_the_signer() {
        // "https://kubernetes..." sorts before "https://oidc...".
        let n = notes(&state());
        assert_eq!(n.len(), 2);
        assert!(n[1].contains("would come first"));
        let mut s = state();
        s.issuers = vec![
            "https://a.example.com".into(),
            "https://kubernetes.default.svc.cluster.local".into(),
        ];
        assert_eq!(notes(&s).len(), 1);
    }

    #[test]
    fn advice_says_rerun_when_the_configmap_cannot_keep_the_order() {
        let a = advice(&state());
        assert!(
            a.starts_with("run irsa-agent apply again after every `kubeadm upgrade`"),
            "{a}"
        );
        assert!(
            a.contains("https://kubernetes.default.svc.cluster.local would sign"),
            "{a}"
        );
        let mut s = state();
        s.issuers = vec![
            "https://a.example.com".into(),
            "https://kubernetes.default.svc.cluster.local".into(),
        ];
        assert!(advice(&s).contains("put the same flags"), "{}", advice(&s));
    }
}
