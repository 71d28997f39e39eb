//! Byte-preserving editors, one per configuration format. Each reads the
//! apiserver arguments a distribution builds from its files and rewrites the
//! files so that the managed flags become a target state. Pure: files come in
//! and go out as text.

pub mod args;
pub mod k0s;
pub mod k3s;
pub mod lines;
pub mod manifest;
pub mod yaml_lines;

use std::collections::BTreeMap;

/// Configuration files by their path on the node (absolute, as the distro sees it).
pub type ConfigSet = BTreeMap<String, String>;

use anyhow::{anyhow, bail, Context, Result};

use crate::distro::{Format, Profile};
use crate::flags::{Arg, SaState};

fn missing_config(profile: &Profile) -> anyhow::Error {
    anyhow!(
        "{} does not exist; is this a {} control-plane node?",
        profile.config,
        profile.title
    )
}

/// A UTF-8 byte-order mark at the start of a file.
const BOM: char = '\u{feff}';

/// The files as the YAML editors see them: a leading byte-order mark, which
/// YAML readers (the kubelet's, k3s', k0s') skip, set aside. The args file
/// keeps it: kubelite does not skip it, and its editor refuses it.
fn without_bom(profile: &Profile, files: &ConfigSet) -> ConfigSet {
    if profile.format == Format::Args {
        return files.clone();
    }
    files
        .iter()
        .map(|(p, t)| (p.clone(), t.strip_prefix(BOM).unwrap_or(t).to_string()))
        .collect()
}

/// The apiserver arguments the distribution builds from `files`.
pub fn read_args(profile: &Profile, files: &ConfigSet) -> Result<Vec<Arg>> {
    let files = &without_bom(profile, files);
    let main = files.get(&profile.config);
    let missing = || missing_config(profile);
    let args = match profile.format {
        Format::Args => args::read(&profile.config, main.ok_or_else(missing)?, &profile.vars),
        Format::Manifest => manifest::read(&profile.config, main.ok_or_else(missing)?),
        Format::K3s => k3s::read_with_command_line(
            files,
            &profile.config,
            &profile.default_args(),
            &profile.name,
            &profile.command_line,
        ),
        Format::K0s => k0s::read(
            &profile.config,
            main.map(String::as_str).unwrap_or(""),
            &profile.default_args(),
        ),
    }?;
    crate::flags::check_audience_values(&args)?;
    Ok(args)
}

/// Values no configuration format can carry to kube-apiserver as themselves:
/// refused before any file is edited.
fn check_target(target: &SaState) -> Result<()> {
    use crate::flags::{API_AUDIENCES, ISSUER, KEY_FILE, SIGNING_KEY_FILE};
    let lists: [(&str, &[String]); 3] = [
        (ISSUER, &target.issuers),
        (KEY_FILE, &target.key_files),
        (API_AUDIENCES, &target.api_audiences),
    ];
    for (flag, values) in lists {
        for (i, v) in values.iter().enumerate() {
            if values[..i].contains(v) {
                bail!("cannot write --{flag}={v:?} twice");
            }
        }
    }
    let singles = target
        .signing_key_file
        .iter()
        .map(|v| (SIGNING_KEY_FILE, v));
    for (flag, v) in lists
        .iter()
        .flat_map(|(f, vs)| vs.iter().map(move |v| (*f, v)))
        .chain(singles)
    {
        if v.is_empty() {
            bail!("cannot write --{flag} with an empty value: kube-apiserver would refuse or ignore it");
        }
        if v.chars().any(char::is_control) || v.starts_with(BOM) {
            bail!("cannot write --{flag}={v:?}: it holds a control character");
        }
    }
    Ok(())
}

/// `files` rewritten so that the managed flags are exactly `target`. Files
/// that need no change come back byte-identical; a file that starts with a
/// byte-order mark keeps it. The result is read back before it is returned:
/// an edit that would not give exactly `target` is an error, never a file.
pub fn write(profile: &Profile, files: &ConfigSet, target: &SaState) -> Result<ConfigSet> {
    check_target(target).with_context(|| format!("editing {}", profile.config))?;
    let stripped = without_bom(profile, files);
    let mut out = write_stripped(profile, &stripped, target)?;
    let edited = || {
        out.iter()
            .filter(|(p, t)| stripped.get(*p) != Some(*t))
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let got = read_args(profile, &out)
        .with_context(|| format!("the edited {} would not read back", edited()))?;
    let got = crate::flags::Effective::from_args(&got).state();
    if got != *target {
        bail!(
            "the edited {} would give {got:?} instead of {target:?}; nothing was written",
            edited()
        );
    }
    for (path, text) in out.iter_mut() {
        if stripped.get(path) != files.get(path) {
            text.insert(0, BOM);
        }
    }
    Ok(out)
}

fn write_stripped(profile: &Profile, files: &ConfigSet, target: &SaState) -> Result<ConfigSet> {
    let mut out = files.clone();
    let main = files.get(&profile.config);
    let missing = || missing_config(profile);
    match profile.format {
        Format::Args => {
            let new = args::edit(main.ok_or_else(missing)?, target, &profile.vars)
                .map_err(|e| e.context(format!("editing {}", profile.config)))?;
            out.insert(profile.config.clone(), new);
        }
        Format::Manifest => {
            let new = manifest::edit(&profile.config, main.ok_or_else(missing)?, target)?;
            out.insert(profile.config.clone(), new);
        }
        Format::K3s => {
            let dropin = profile
                .dropin
                .as_deref()
                .ok_or_else(|| anyhow!("profile {} names no drop-in", profile.name))?;
            out = k3s::edit_with_command_line(
                files,
                &profile.config,
                dropin,
                &profile.default_args(),
                &profile.name,
                &profile.command_line,
                target,
            )?;
        }
        Format::K0s => {
            let text = main.ok_or_else(|| {
                anyhow!(
                    "{} does not exist; create it with `k0s config create > {}` and make sure k0s is started \
                     with --config {}",
                    profile.config,
                    profile.config,
                    profile.config
                )
            })?;
            out.insert(
                profile.config.clone(),
                k0s::edit(&profile.config, text, &profile.default_args(), target)?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod regressions;

/// The apiserver arguments of a running process's command line (program
/// first), paired the way pflag pairs them.
pub fn args_from_command_line(cmd: &[String]) -> Vec<Arg> {
    let tokens: Vec<lines::Token> = cmd
        .iter()
        .skip(1)
        .enumerate()
        .map(|(i, t)| lines::Token {
            text: t.clone(),
            line: i,
            prefix: String::new(),
            suffix: String::new(),
        })
        .collect();
    lines::items_from_argv(&tokens)
        .into_iter()
        .map(|it| {
            Arg::new(
                it.name,
                it.value,
                crate::flags::Source::default_of("the process command line"),
            )
        })
        .collect()
}
