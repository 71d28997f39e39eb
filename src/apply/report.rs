//! What `apply` tells the user: the human lines and the JSON object.

use serde_json::json;

use crate::cli::ApplyOpts;
use crate::distro::{Profile, RestartMethod};
use crate::node::Node;
use crate::output::Outcome;
use crate::system::backup;
use crate::verify;

use super::{Done, Plan};

fn restart_hint(profile: &Profile) -> String {
    match (profile.restart.method, &profile.restart.unit) {
        (RestartMethod::Systemd, Some(unit)) => format!("restart the apiserver: systemctl restart {unit}"),
        _ => "the kubelet restarts the apiserver pod by itself when the manifest changes; wait for it to be ready".into(),
    }
}

pub(super) fn report(node: &Node, opts: &ApplyOpts, plan: &Plan, done: &Done) -> Outcome {
    let profile = node.profile();
    let changed = !plan.changes.is_empty();
    let pending = done.restart_pending;
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
        .set("warnings", plan.warnings.clone())
        .set("notes", plan.notes.clone());

    let verb = match (changed, opts.check) {
        (false, _) => "already converged: nothing to change",
        (true, true) => "would change (--check: nothing written)",
        (true, false) => "changed",
    };
    o.line(format!("{}: {verb}", profile.title));
    for c in &plan.changes {
        o.line(format!("  {:<8} {}", c.action(), c.path));
    }
    if opts.diff {
        for c in &plan.changes {
            o.human.push_str(&c.diff());
        }
    }
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
        plan.target.api_audiences.join(", ")
    ));
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
    for n in &plan.notes {
        o.line(format!("note: {n}"));
    }
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    o
}
