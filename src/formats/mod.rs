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

use anyhow::{anyhow, Result};

use crate::distro::{Format, Profile};
use crate::flags::{Arg, SaState};

fn missing_config(profile: &Profile) -> anyhow::Error {
    anyhow!(
        "{} does not exist; is this a {} control-plane node?",
        profile.config,
        profile.title
    )
}

/// The apiserver arguments the distribution builds from `files`.
pub fn read_args(profile: &Profile, files: &ConfigSet) -> Result<Vec<Arg>> {
    let main = files.get(&profile.config);
    let missing = || missing_config(profile);
    match profile.format {
        Format::Args => Ok(args::read(
            &profile.config,
            main.ok_or_else(missing)?,
            &profile.vars,
        )),
        Format::Manifest => manifest::read(&profile.config, main.ok_or_else(missing)?),
        Format::K3s => k3s::read(
            files,
            &profile.config,
            &profile.default_args(),
            &profile.name,
        ),
        Format::K0s => k0s::read(
            &profile.config,
            main.map(String::as_str).unwrap_or(""),
            &profile.default_args(),
        ),
    }
}

/// `files` rewritten so that the managed flags are exactly `target`. Files
/// that need no change come back byte-identical.
pub fn write(profile: &Profile, files: &ConfigSet, target: &SaState) -> Result<ConfigSet> {
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
            out = k3s::edit(
                files,
                &profile.config,
                dropin,
                &profile.default_args(),
                &profile.name,
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
    lines::items_from_tokens(&tokens)
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
