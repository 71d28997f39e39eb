//! Property tests of the line editors: for any file of flag lines and any
//! target, the edited file reads back as exactly the target, every other line
//! survives byte for byte and in order, and editing again changes nothing.

use proptest::prelude::*;

use super::{args, k0s, k3s, manifest, ConfigSet};
use crate::flags::{converge, Desired};
use crate::flags::{Effective, SaState, API_AUDIENCES, ISSUER, KEY_FILE, SIGNING_KEY_FILE};

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "https://a",
        "https://b",
        "https://c/x",
        "/k/1",
        "/k/2",
        "sts.amazonaws.com",
    ])
    .prop_map(String::from)
}

fn target() -> impl Strategy<Value = SaState> {
    (
        prop::collection::vec(value(), 0..4),
        prop::collection::vec(value(), 0..4),
        prop::option::of(value()),
        prop::collection::vec(value(), 0..4),
    )
        .prop_map(|(i, k, s, a)| SaState {
            issuers: crate::flags::dedup_keep_first(i),
            key_files: crate::flags::dedup_keep_first(k),
            signing_key_file: s,
            api_audiences: crate::flags::dedup_keep_first(a),
        })
}

#[derive(Debug, Clone)]
enum Line {
    Comment(String),
    Blank,
    Other(u8),
    Managed {
        name: &'static str,
        value: String,
        style: u8,
    },
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        "[a-z ]{0,12}".prop_map(Line::Comment),
        Just(Line::Blank),
        (0u8..20).prop_map(Line::Other),
        (
            prop::sample::select(vec![ISSUER, KEY_FILE, SIGNING_KEY_FILE, API_AUDIENCES]),
            value(),
            0u8..4
        )
            .prop_map(|(name, value, style)| Line::Managed { name, value, style }),
    ]
}

fn args_text(lines: &[Line], crlf: bool) -> String {
    let eol = if crlf { "\r\n" } else { "\n" };
    lines
        .iter()
        .map(|l| match l {
            Line::Comment(c) => format!("#{c}{eol}"),
            Line::Blank => eol.to_string(),
            Line::Other(n) => format!("--other-{n}=v{n}{eol}"),
            Line::Managed { name, value, style } => match style {
                0 => format!("--{name}={value}{eol}"),
                1 => format!("--{name}='{value}'{eol}"),
                2 => format!("  --{name}=\"{value}\"  {eol}"),
                _ => format!("--{name} {value}{eol}"),
            },
        })
        .collect()
}

fn manifest_text(lines: &[Line], crlf: bool) -> String {
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut s = format!("apiVersion: v1{eol}kind: Pod{eol}spec:{eol}  containers:{eol}  - command:{eol}    - kube-apiserver{eol}");
    for l in lines {
        s.push_str(&match l {
            Line::Comment(c) => format!("    #{c}{eol}"),
            Line::Blank => eol.to_string(),
            Line::Other(n) => format!("    - --other-{n}=v{n}{eol}"),
            Line::Managed { name, value, style } => match style {
                0 => format!("    - --{name}={value}{eol}"),
                1 => format!("    - '--{name}={value}'{eol}"),
                2 => format!("    - \"--{name}={value}\" # note{eol}"),
                _ => format!("    - --{name}{eol}    - {value}{eol}"),
            },
        });
    }
    s.push_str(&format!(
        "    image: registry.k8s.io/kube-apiserver:v1.31.0{eol}    name: kube-apiserver{eol}"
    ));
    s
}

fn is_managed_line(l: &str) -> bool {
    [ISSUER, KEY_FILE, SIGNING_KEY_FILE, API_AUDIENCES].iter().any(|f| l.contains(f))
        // the value line of a two-item flag
        || ["- https://", "- /k/", "- sts."].iter().any(|v| l.trim_start().starts_with(v))
}

fn assert_others_kept(old: &str, new: &str) -> Result<(), TestCaseError> {
    let mut rest = new.split_inclusive('\n');
    for l in old.split_inclusive('\n').filter(|l| !is_managed_line(l)) {
        prop_assert!(
            rest.any(|n| n == l),
            "line {:?} lost or moved in\n{}",
            l,
            new
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn args_file_edits(lines in prop::collection::vec(line(), 0..14), t in target(), crlf: bool) {
        let vars = Default::default();
        let text = args_text(&lines, crlf);
        let out = args::edit(&text, &t, &vars).unwrap();
        let got = Effective::from_args(&args::read("/f", &out, &vars).unwrap()).state();
        prop_assert_eq!(&got, &t, "edited:\n{}", out);
        assert_others_kept(&text, &out)?;
        prop_assert_eq!(args::edit(&out, &t, &vars).unwrap(), out.clone());
        if text.contains("\r\n") {
            prop_assert!(!out.replace("\r\n", "").contains('\n'), "mixed line endings:\n{:?}", out);
        }
    }

    #[test]
    fn manifest_edits(lines in prop::collection::vec(line(), 0..14), t in target(), crlf: bool) {
        let text = manifest_text(&lines, crlf);
        let out = manifest::edit("/m", &text, &t).unwrap();
        let got = Effective::from_args(&manifest::read("/m", &out).unwrap()).state();
        prop_assert_eq!(&got, &t, "edited:\n{}", out);
        assert_others_kept(&text, &out)?;
        prop_assert_eq!(manifest::edit("/m", &out, &t).unwrap(), out.clone());
        if text.contains("\r\n") {
            prop_assert!(!out.replace("\r\n", "").contains('\n'), "mixed line endings:\n{:?}", out);
        }
        // The result is still YAML with the same container.
        let v: serde_norway::Value = serde_norway::from_str(&out).unwrap();
        prop_assert_eq!(&v["spec"]["containers"][0]["name"], "kube-apiserver");
    }
}

fn desired() -> impl Strategy<Value = Desired> {
    (
        prop::sample::select(vec!["https://a", "https://b", "https://c/x"]),
        prop::collection::vec(
            prop::sample::select(vec!["sts.amazonaws.com", "vault", "https://a"]),
            0..3,
        ),
        prop::option::of(prop::sample::select(vec!["/k/new.key", "/k/other.key"])),
        prop::collection::vec(prop::sample::select(vec!["/k/new.pub", "/k/2"]), 0..3),
    )
        .prop_map(|(i, a, s, k)| Desired {
            issuer: i.to_string(),
            audiences: a.into_iter().map(String::from).collect(),
            signing_key_file: s.map(String::from),
            extra_key_files: k.into_iter().map(String::from).collect(),
        })
}

fn k3s_item() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            ISSUER,
            KEY_FILE,
            API_AUDIENCES,
            "audit-log-maxage",
            "feature-gates",
        ]),
        prop::sample::select(vec!["=", "+=", "-="]),
        value(),
    )
        .prop_map(|(n, op, v)| format!("{n}{op}{v}"))
}

const K3S: &str = "/etc/rancher/k3s/config.yaml";
const DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/99-irsa-agent.yaml";

use super::k3s::test_defaults as k3s_defaults;

fn k3s_state(files: &ConfigSet) -> SaState {
    Effective::from_args(&k3s::read(files, K3S, &k3s_defaults(), "k3s").unwrap()).state()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn k3s_dropin_converges(
        main in prop::collection::vec(k3s_item(), 0..5),
        dropin in prop::option::of(prop::collection::vec(k3s_item(), 0..3)),
        d1 in desired(),
        d2 in desired(),
    ) {
        let mut files = ConfigSet::new();
        let list: String = main.iter().map(|i| format!("  - {i}\n")).collect();
        files.insert(K3S.into(), format!("# user config\nwrite-kubeconfig-mode: \"0644\"\nkube-apiserver-arg:\n{list}"));
        if let Some(d) = dropin {
            let list: String = d.iter().map(|i| format!("- {i}\n")).collect();
            files.insert(format!("{K3S}.d/10-user.yaml"), format!("kube-apiserver-arg+:\n{list}"));
        }
        let cur = k3s_state(&files);
        // The apiserver refuses duplicate issuers: such a start state is broken already.
        prop_assume!(crate::flags::dedup_keep_first(cur.issuers.clone()) == cur.issuers);
        let mut state = files.clone();
        for d in [d1, d2] {
            let before = k3s_state(&state);
            let t = converge(&before, &d);
            match k3s::edit(&state, K3S, DROPIN, &k3s_defaults(), "k3s", &t) {
                Ok(out) => {
                    prop_assert_eq!(k3s_state(&out), t.clone());
                    for (p, text) in &files {
                        prop_assert_eq!(out.get(p), Some(text), "user file {} changed", p);
                    }
                    prop_assert_eq!(k3s::edit(&out, K3S, DROPIN, &k3s_defaults(), "k3s", &t).unwrap(), out.clone());
                    state = out;
                }
                // Only when the user's own files hold the desired issuer behind
                // another one (a drop-in cannot reorder them) or set the signing
                // key more than once.
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.contains("cannot express") || msg.contains("is set"), "{}", msg);
                    break;
                }
            }
        }
    }

    #[test]
    fn k0s_converges(raw in prop::collection::vec(k3s_item(), 0..4), d1 in desired(), d2 in desired()) {
        let defaults = k3s_defaults();
        let raw_block: String = raw.iter().map(|i| format!("    - --{}\n", i.replace("+=", "=").replace("-=", "="))).collect();
        let text = format!("apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  api:\n    port: 6443\n    rawArgs:\n{raw_block}  network:\n    provider: calico\n");
        let state_of = |t: &str| Effective::from_args(&k0s::read("/k0s.yaml", t, &defaults).unwrap()).state();
        prop_assume!(crate::flags::dedup_keep_first(state_of(&text).issuers) == state_of(&text).issuers);
        let mut cur = text.clone();
        for d in [d1, d2] {
            let t = converge(&state_of(&cur), &d);
            let out = k0s::edit("/k0s.yaml", &cur, &defaults, &t).unwrap();
            prop_assert_eq!(state_of(&out), t.clone(), "edited:\n{}", out);
            prop_assert!(out.contains("  network:\n    provider: calico\n"));
            prop_assert_eq!(k0s::edit("/k0s.yaml", &out, &defaults, &t).unwrap(), out.clone());
            cur = out;
        }
    }
}
