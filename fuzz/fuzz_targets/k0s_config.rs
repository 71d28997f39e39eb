//! The k0s.yaml editor (spec.api.extraArgs / rawArgs): any text, any target.
//! Properties: no panic; an accepted edit reads back as the target, is
//! idempotent, and the YAML document is the same apart from spec.api's
//! extraArgs and rawArgs.
#![no_main]

use irsa_fuzz::{check_edit, SingleFile};
use libfuzzer_sys::fuzz_target;
use serde_norway::Value;

fn without_api_args(text: &str) -> Value {
    let mut doc: Value =
        serde_norway::from_str(text.trim_start_matches('\u{feff}')).unwrap_or(Value::Null);
    if let Some(api) = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("api"))
        .and_then(Value::as_mapping_mut)
    {
        api.remove("extraArgs");
        api.remove("rawArgs");
        if api.is_empty() {
            // `api:` with nothing under it gained its first keys.
            doc["spec"]["api"] = Value::Null;
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
    }) = SingleFile::new("k0s", data)
    else {
        return;
    };
    let Some(out) = check_edit(p, &files, &target) else {
        return;
    };
    let new = &out[&p.config];
    assert_eq!(
        without_api_args(&old),
        without_api_args(new),
        "something besides spec.api.extraArgs/rawArgs changed:\n{new}"
    );
    irsa_fuzz::assert_line_endings(&old, new);
});
