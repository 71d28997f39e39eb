//! The k3s/RKE2 configuration editor: config.yaml, a user drop-in and
//! irsa-agent's own drop-in, each any text; any target state.
//! Input: `config.yaml \0 10-user.yaml \0 99-irsa-agent.yaml \0 spec`.
//! Properties: no panic; an accepted edit reads back as the target, is
//! idempotent; the user's files are untouched except for the one line of a
//! signing key they set themselves.
#![no_main]

use irsa_fuzz::{assert_lines_kept, check_edit, parts, pick_target, profile, state, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = profile(if data.first().is_some_and(|b| b & 1 == 1) {
        "rke2"
    } else {
        "k3s"
    });
    let parts = parts(data, 4);
    let dropin = p.dropin.clone().expect("k3s profiles name a drop-in");
    let mut files = irsa_agent::formats::ConfigSet::new();
    files.insert(p.config.clone(), text(parts[0]));
    if let Some(t) = parts.get(1).filter(|t| !t.is_empty()) {
        files.insert(format!("{}.d/10-user.yaml", p.config), text(t));
    }
    if let Some(t) = parts.get(2).filter(|t| !t.is_empty()) {
        files.insert(dropin.clone(), text(t));
    }
    let Ok(current) = state(p, &files) else {
        return;
    };
    let target = pick_target(parts.get(3).copied(), &current);
    let Some(out) = check_edit(p, &files, &target) else {
        return;
    };

    for (path, old) in files.iter().filter(|(path, _)| **path != dropin) {
        let new = &out[path];
        if new != old {
            // Only the user's own signing-key item may be edited in place.
            let changed: Vec<usize> = irsa_fuzz::contents(old)
                .iter()
                .zip(irsa_fuzz::contents(new))
                .enumerate()
                .filter(|(_, (a, b))| *a != b)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(
                changed.len(),
                1,
                "{path}: more than one line changed:\n{new}"
            );
            assert!(
                irsa_fuzz::contents(old)[changed[0]].contains("service-account-signing-key-file"),
                "{path}: a line that is not the signing key changed:\n{new}"
            );
            assert_lines_kept(old, new, |i| i != changed[0]);
        }
    }
    for (path, _) in out.iter() {
        assert!(
            files.contains_key(path) || *path == dropin,
            "unexpected new file {path}"
        );
    }
});
