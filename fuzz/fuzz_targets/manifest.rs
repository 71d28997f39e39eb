//! The static-pod manifest editor (kubeadm profile): any text, any target.
//! Properties: no panic; an accepted edit reads back as the target (by the
//! crate and by the independent reader), is idempotent, keeps every line that
//! holds no managed flag, keeps CRLF files CRLF, and the YAML document is the
//! same apart from the kube-apiserver container's command/args lists.
#![no_main]

use irsa_agent::formats::manifest;
use irsa_fuzz::{assert_independent, assert_line_endings, assert_lines_kept, check_edit};
use irsa_fuzz::{effective, mentions_managed_flag, SingleFile};
use libfuzzer_sys::fuzz_target;
use serde_norway::Value;

/// The document with the kube-apiserver container's command and args removed.
fn without_apiserver_lists(text: &str) -> Value {
    let mut doc: Value = serde_norway::from_str(text.trim_start_matches('\u{feff}'))
        .expect("the editor accepted it, so it is YAML");
    if let Some(cs) = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("containers"))
        .and_then(Value::as_sequence_mut)
    {
        for c in cs {
            if c.get("name").and_then(Value::as_str) == Some("kube-apiserver") {
                if let Some(m) = c.as_mapping_mut() {
                    m.remove("command");
                    m.remove("args");
                }
            }
        }
    }
    doc
}

fuzz_target!(|data: &[u8]| {
    let Some(SingleFile {
        profile: p,
        old,
        files,
        target,
    }) = SingleFile::new("kubeadm", data)
    else {
        return;
    };
    let Some(out) = check_edit(p, &files, &target) else {
        return;
    };
    let new = &out[&p.config];

    let items = manifest::items(&p.config, &old).expect("read before");
    let managed_line = |i: usize| {
        items.iter().any(|it| {
            irsa_agent::flags::is_managed(&it.name) && (it.line..=it.last_line).contains(&i)
        })
    };
    for (i, l) in irsa_fuzz::contents(&old).iter().enumerate() {
        if let Some(it) = items.iter().find(|it| {
            irsa_agent::flags::is_managed(&it.name) && (it.line..=it.last_line).contains(&i)
        }) {
            assert!(
                mentions_managed_flag(l) || i > it.line,
                "line {} {l:?} counted as a managed flag",
                i + 1
            );
        }
    }
    assert_lines_kept(&old, new, |i| !managed_line(i));
    assert_line_endings(&old, new);
    assert_eq!(
        without_apiserver_lists(&old),
        without_apiserver_lists(new),
        "something besides the apiserver's command/args changed:\n{new}"
    );
    if let Ok(argv) = effective::manifest_args(new) {
        assert_independent(&argv, &target);
    }
});
