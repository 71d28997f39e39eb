//! What `apply` tells the user: the human lines and the JSON object.
//!
//! Human output, in order: what was found, the files and (with `--diff`) the
//! diff, one line per changed setting saying why, what was done (backup,
//! restart, verification), then the one piece of advice for this
//! distribution, wrapped to the terminal. The resulting issuers and
//! audiences of a change and the long notes (kubeadm's `extraArgs`) come
//! with `-v`; the JSON always has everything.

use serde_json::json;

use crate::cli::ApplyOpts;
use crate::distro::{Format, Profile, RestartMethod};
use crate::flags::{SaState, API_AUDIENCES, ISSUER, KEY_FILE, SIGNING_KEY_FILE};
use crate::node::Node;
use crate::output::{self, Outcome};
use crate::system::backup;
use crate::{redact, verify};

use super::{Done, Plan};

fn restart_hint(profile: &Profile) -> String {
    match (profile.restart.method, &profile.restart.unit) {
        (RestartMethod::Systemd, Some(unit)) => format!("restart the apiserver: systemctl restart {unit}"),
        _ => "the kubelet restarts the apiserver pod by itself when the manifest changes; wait for it to be ready".into(),
    }
}

/// The settings found on the node, in one sentence.
fn found(cur: &SaState) -> String {
    let mut parts = Vec::new();
    match cur.issuers.as_slice() {
        [] => parts.push("no issuer".to_string()),
        [one] => parts.push(format!("issuer {one}")),
        [first, rest @ ..] => parts.push(format!("issuers {first} (signs), {}", rest.join(", "))),
    }
    if let Some(k) = &cur.signing_key_file {
        parts.push(format!("signing key {k}"));
    }
    if cur.api_audiences.is_empty() {
        parts.push("--api-audiences unset".into());
    } else {
        parts.push(format!("audiences {}", cur.api_audiences.join(", ")));
    }
    parts.join(", ")
}

/// One sentence per changed setting: what changes and why.
pub(crate) fn why(cur: &SaState, target: &SaState, asked_audiences: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(new) = target.issuers.first() {
        if cur.issuers.first() != Some(new) {
            let how = if cur.issuers.contains(new) {
                "moved first"
            } else {
                "added first"
            };
            out.push(format!("{ISSUER} {new}: {how}, so it signs new tokens"));
            if let Some(old) = cur.issuers.first().filter(|o| target.issuers.contains(o)) {
                out.push(format!(
                    "{ISSUER} {old}: kept after it, so the tokens it issued keep verifying"
                ));
            }
        }
    }
    if target.api_audiences != cur.api_audiences {
        let added: Vec<&String> = target
            .api_audiences
            .iter()
            .filter(|a| !cur.effective_audiences().contains(a))
            .collect();
        let added_text = if added.is_empty() {
            String::new()
        } else {
            let from = if added.iter().all(|a| asked_audiences.contains(a)) {
                " (--audience)"
            } else {
                ""
            };
            format!(
                "; {} is new{from}",
                added
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if cur.api_audiences.is_empty() && !cur.issuers.is_empty() {
            out.push(format!(
                "{API_AUDIENCES} {}: written out, because unset they follow the issuers and would change \
                 with the new one{added_text}",
                target.api_audiences.join(",")
            ));
        } else {
            out.push(format!(
                "{API_AUDIENCES} {}: the audiences accepted so far are kept{added_text}",
                target.api_audiences.join(",")
            ));
        }
    }
    for k in target
        .key_files
        .iter()
        .filter(|k| !cur.key_files.contains(k))
    {
        out.push(format!(
            "{KEY_FILE} {k}: added, so tokens signed with its key verify"
        ));
    }
    if target.signing_key_file != cur.signing_key_file {
        if let Some(k) = &target.signing_key_file {
            out.push(format!(
                "{SIGNING_KEY_FILE} {k}: new tokens are signed with it; the key files stay, so tokens signed \
                 with the old key keep verifying"
            ));
        }
    }
    out
}

/// The advice that matters for this node after a change: the distribution's
/// (for kubeadm, what to do about `kubeadm upgrade` given these issuers).
fn advice(profile: &Profile, target: &SaState) -> Vec<String> {
    if profile.format == Format::Manifest && profile.name == "kubeadm" {
        vec![crate::kubeadm::advice(target)]
    } else {
        profile.warnings.apply.clone()
    }
}

pub(super) fn report(node: &Node, opts: &ApplyOpts, plan: &Plan, done: &Done) -> Outcome {
    let profile = node.profile();
    let changed = !plan.changes.is_empty();
    let pending = done.restart_pending;
    // `-v` (or IRSA_AGENT_LOG at info) shows the details.
    let verbose = tracing::enabled!(tracing::Level::INFO);
    let width = output::width();
    let current = node.effective.state();
    let why = if changed {
        why(&current, &plan.target, &opts.audiences)
    } else {
        Vec::new()
    };
    let advice = if changed {
        advice(profile, &plan.target)
    } else {
        Vec::new()
    };
    let mut o = Outcome::new();
    let files: Vec<_> = plan
        .changes
        .iter()
        .map(|c| json!({"path": c.path, "action": c.action(), "diff": c.diff()}))
        .collect();
    o.set("changed", changed)
        .set("check", opts.check)
        .set("distro", profile.name.clone())
        .set("files", files)
        .set("issuers", plan.target.issuers.clone())
        .set("api_audiences", plan.target.api_audiences.clone())
        .set("signing_key_file", plan.target.signing_key_file.clone())
        .set("key_files", plan.target.key_files.clone())
        .set("restarted", done.restarted)
        .set("restart_pending", pending)
        .set("verified", json!(done.verified))
        .set("old_token_authenticated", done.old_token_authenticated)
        .set("rolled_back", false)
        .set("backup", done.backup.clone())
        .set("recovered", done.recovered.clone())
        .set("why", why.clone())
        .set("warnings", plan.warnings.clone())
        .set("notes", plan.notes.clone());

    let verb = match (changed, opts.check) {
        (false, _) => "already converged: nothing to change",
        (true, true) => "would change (--check: nothing written)",
        (true, false) => "changed",
    };
    o.line(format!("{}: {verb}", profile.title));
    o.wrapped("found:       ", 13, &found(&current), width);
    for c in &plan.changes {
        o.line(format!("  {:<8} {}", c.action(), c.path));
    }
    if opts.diff {
        for c in &plan.changes {
            o.human.push_str(&c.diff());
        }
    }
    if !why.is_empty() {
        o.line("why:");
        for w in &why {
            o.wrapped("  ", 4, w, width);
        }
    }
    if !changed || verbose {
        o.line(format!(
            "issuers:     {} (signs){}",
            plan.target.issuers[0],
            plan.target.issuers[1..]
                .iter()
                .map(|i| format!(", {i}"))
                .collect::<String>()
        ));
        o.line(format!(
            "audiences:   {}",
            plan.target.effective_audiences().join(", ")
        ));
    }
    for id in &done.recovered {
        o.line(format!(
            "recovered:   undid an interrupted apply first (backup {}/{id})",
            backup::BACKUP_DIR
        ));
    }
    if let Some(id) = &done.backup {
        o.line(format!("backup:      {}/{id}", backup::BACKUP_DIR));
    }
    if done.restarted {
        o.line("restart:     done, apiserver ready");
    }
    if pending {
        o.line(format!("restart:     pending; {}", restart_hint(profile)));
    }
    if let Some(v) = &done.verified {
        verify::human_claims(&mut o, v);
    }
    if done.old_token_authenticated == Some(true) {
        o.line("old token:   still authenticates");
    }
    if verbose {
        for n in &plan.notes {
            o.line(format!("note: {n}"));
        }
    }
    for a in &advice {
        o.wrapped("next: ", 6, a, width);
    }
    // The distribution's advice is shown above (and is in the JSON's
    // warnings); the rest are problems, logged as such.
    for w in &plan.warnings {
        if !profile.warnings.apply.contains(w) {
            tracing::warn!("{}", redact::free_text(w));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(issuers: &[&str], audiences: &[&str]) -> SaState {
        SaState {
            issuers: issuers.iter().map(|s| s.to_string()).collect(),
            key_files: vec!["/pki/sa.pub".into()],
            signing_key_file: Some("/pki/sa.key".into()),
            api_audiences: audiences.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn one_reason_per_changed_setting() {
        let old = "https://kubernetes.default.svc.cluster.local";
        let new = "https://oidc.example.com/c";
        let cur = state(&[old], &[]);
        let mut target = state(&[new, old], &[old, "sts.amazonaws.com"]);
        let w = why(&cur, &target, &["sts.amazonaws.com".into()]);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(w[0].starts_with(&format!(
            "service-account-issuer {new}: added first, so it signs"
        )));
        assert!(w[1].contains(&format!(
            "{old}: kept after it, so the tokens it issued keep verifying"
        )));
        assert!(
            w[2].contains("written out, because unset they follow the issuers and would change")
        );
        assert!(
            w[2].ends_with("sts.amazonaws.com is new (--audience)"),
            "{}",
            w[2]
        );

        target.key_files.push("/pki/new.pub".into());
        target.signing_key_file = Some("/pki/new.key".into());
        let w = why(&cur, &target, &[]);
        assert_eq!(w.len(), 5, "{w:#?}");
        assert!(w[3].starts_with("service-account-key-file /pki/new.pub: added"));
        assert!(w[4].starts_with("service-account-signing-key-file /pki/new.key: new tokens"));

        // Nothing changed, nothing to explain.
        assert!(why(&target, &target, &[]).is_empty());
    }

    #[test]
    fn diffs_show_only_changed_lines_and_mask_secrets_on_them() {
        let change = |old: &str, new: &str| super::super::FileChange {
            path: "/etc/rancher/k3s/config.yaml".into(),
            old: Some(old.into()),
            new: new.as_bytes().to_vec(),
            mode: 0o600,
            secret: false,
        };
        // The neighbours of the changed line are not shown.
        let d = change(
            "token: s3cr3t-neighbour\nkube-apiserver-arg:\n  - \"a=1\"\nagent-token: s3cr3t-2\n",
            "token: s3cr3t-neighbour\nkube-apiserver-arg:\n  - \"a=2\"\nagent-token: s3cr3t-2\n",
        )
        .diff();
        assert!(!d.contains("s3cr3t"), "{d}");
        assert!(d.contains("-  - \"a=1\"\n+  - \"a=2\"\n"), "{d}");
        // A changed line that holds a secret is shown masked.
        let d = change(
            "datastore-endpoint: postgres://k3s:pg-s3cr3t@db:5432/k3s # old\n",
            "datastore-endpoint: postgres://k3s:pg-s3cr3t@db:5432/k3s # new\n",
        )
        .diff();
        assert!(!d.contains("s3cr3t"), "{d}");
        assert!(
            d.contains("+datastore-endpoint: postgres://k3s:<redacted>@db:5432/k3s # new"),
            "{d}"
        );
    }
}
