//! The MicroK8s args-file editor: any text, any target state.
//! Properties: no panic; an accepted edit reads back as the target (by the
//! crate and by the independent kubelite/pflag reader), is idempotent, keeps
//! every line that holds no managed flag, and keeps CRLF files CRLF.
#![no_main]

use irsa_agent::formats::args;
use irsa_fuzz::{assert_independent, assert_line_endings, assert_lines_kept, check_edit_with};
use irsa_fuzz::{effective, mentions_managed_flag, SingleFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(SingleFile {
        profile: p,
        old,
        files,
        target,
    }) = SingleFile::new("microk8s", data)
    else {
        return;
    };
    let env = |name: &str| p.vars.get(name).cloned();
    let empty_audience =
        |t: &str| irsa_fuzz::argv_has_empty_audience(&effective::microk8s_parse_args(t, &env));
    let Some(out) = check_edit_with(p, &files, &target, &empty_audience) else {
        return;
    };
    let new = &out[&p.config];

    // Only the lines of managed flags (and their values) may change; a line
    // counted as one spells a managed flag once unquoted and expanded.
    let items = args::items(&old, &p.vars).unwrap_or_default();
    let managed_line = |i: usize| {
        items.iter().any(|it| {
            irsa_agent::flags::is_managed(&it.name) && (it.line..=it.last_line).contains(&i)
        })
    };
    let old_lines = irsa_fuzz::contents(&old);
    for (i, l) in old_lines.iter().enumerate() {
        if managed_line(i) && i < old_lines.len() {
            let it = items
                .iter()
                .find(|it| (it.line..=it.last_line).contains(&i))
                .unwrap();
            assert!(
                mentions_managed_flag(&effective::microk8s_parse_args(l, &env).join(" "))
                    || i > it.line,
                "line {} {l:?} counted as a managed flag",
                i + 1
            );
        }
    }
    assert_lines_kept(&old, new, |i| !managed_line(i));
    assert_line_endings(&old, new);

    // kubelite's reading of the new file gives the target too.
    assert_independent(&effective::microk8s_parse_args(new, &env), &target);
});
