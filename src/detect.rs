//! `detect`: the distribution and the service-account settings the apiserver
//! runs with, each value with the line it comes from.

use anyhow::Result;
use serde_json::{json, Value};

use crate::cli::{DetectOpts, GlobalOpts};
use crate::flags::Sourced;
use crate::keycheck;
use crate::node::{self, Node};
use crate::output::Outcome;

pub fn run(global: &GlobalOpts, _opts: &DetectOpts) -> Result<Outcome> {
    let node = node::inspect(node::sysroot(global)?, global.distro.as_deref())?;
    report(&node)
}

fn sourced(v: &Sourced) -> Value {
    json!({"value": v.value, "source": v.source})
}

fn report(node: &Node) -> Result<Outcome> {
    let p = node.profile();
    let eff = &node.effective;
    let state = eff.state();
    let keys = keycheck::check(&node.root, p, &state)?;
    let mut warnings: Vec<String> = keys.warnings.clone();
    warnings.extend(keys.signing_key_unverifiable.clone());
    if !node.detection.also_found.is_empty() {
        warnings.push(format!(
            "markers of {} were found too; pass --distro to choose another",
            node.detection.also_found.join(", ")
        ));
    }
    if eff.issuers.is_empty() {
        warnings.push("no --service-account-issuer is set: the apiserver will not start".into());
    }
    let running = node::apiserver_running(node);
    let audiences = eff.audiences();
    let explicit = !eff.explicit_audiences.is_empty();

    let mut o = Outcome::new();
    o.set("distro", p.name.clone())
        .set("title", p.title.clone())
        .set("detected_by", node.detection.marker.clone())
        .set(
            "config_files",
            node.files.keys().cloned().collect::<Vec<_>>(),
        )
        .set(
            "issuers",
            eff.issuers
                .iter()
                .enumerate()
                .map(|(i, s)| json!({"value": s.value, "source": s.source, "signs": i == 0}))
                .collect::<Vec<_>>(),
        )
        .set(
            "signing_key_file",
            eff.signing_key_file.as_ref().map(sourced),
        )
        .set(
            "key_files",
            eff.key_files.iter().map(sourced).collect::<Vec<_>>(),
        )
        .set(
            "api_audiences",
            audiences.iter().map(sourced).collect::<Vec<_>>(),
        )
        .set("api_audiences_explicit", explicit)
        .set("key_dir", p.key_dir.clone())
        .set("admin_kubeconfig", p.admin_kubeconfig.clone())
        .set("apiserver_port", p.apiserver_port)
        .set("apiserver_running", running)
        .set("warnings", warnings.clone());

    o.line(format!(
        "distribution: {}{}",
        p.title,
        node.detection
            .marker
            .as_ref()
            .map(|m| format!(" (found {m})"))
            .unwrap_or_else(|| " (--distro)".into())
    ));
    for f in node.files.keys() {
        o.line(format!("config file:  {f}"));
    }
    if node.files.is_empty() {
        o.line(format!(
            "config file:  {} (absent: built-in defaults apply)",
            p.config
        ));
    }
    o.line("issuers (the first signs new tokens; all are accepted):");
    for (i, s) in eff.issuers.iter().enumerate() {
        o.line(format!(
            "  {} {}    [{}]",
            if i == 0 { "*" } else { " " },
            s.value,
            s.source
        ));
    }
    match &eff.signing_key_file {
        Some(s) => o.line(format!("signing key:  {}    [{}]", s.value, s.source)),
        None => o.line("signing key:  (none)"),
    };
    o.line("key files (tokens signed by any of these verify):");
    for s in &eff.key_files {
        o.line(format!("    {}    [{}]", s.value, s.source));
    }
    o.line(if explicit {
        "audiences (explicit --api-audiences):"
    } else {
        "audiences (no --api-audiences: defaulted to the issuers):"
    });
    for s in &audiences {
        o.line(format!("    {}    [{}]", s.value, s.source));
    }
    if let Some(r) = running {
        o.line(format!(
            "apiserver process: {}",
            if r { "running" } else { "not running" }
        ));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(o)
}
