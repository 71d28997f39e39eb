//! `irsa-agent generate DIR` (hidden): the man pages and shell completions,
//! generated from the clap definitions so they cannot drift from `--help`.
//! Packaging (`packaging/build-assets.sh`) runs it before the .deb, the .rpm
//! and `install.sh` pick the files up.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use roff::{bold, italic, roman, Roff};

use crate::cli::{Cli, GenerateOpts, GlobalOpts, EXIT_CODES};
use crate::output::Outcome;

/// The completion files, by shell: (shell, file name).
pub const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "irsa-agent.bash"),
    (Shell::Zsh, "_irsa-agent"),
    (Shell::Fish, "irsa-agent.fish"),
];

pub fn run(global: &GlobalOpts, opts: &GenerateOpts) -> Result<Outcome> {
    let why = "it writes the man pages and completions into DIR on this machine";
    crate::global_flags::refuse_root(global, "generate", why)?;
    crate::global_flags::refuse_distro(global, "generate", why)?;
    let mut written = Vec::new();
    let man_dir = opts.out.join("man");
    fs_err::create_dir_all(&man_dir)?;
    for (name, page) in man_pages()? {
        let path = man_dir.join(name);
        fs_err::write(&path, page)?;
        written.push(path);
    }
    let comp_dir = opts.out.join("completions");
    fs_err::create_dir_all(&comp_dir)?;
    for (shell, name) in COMPLETIONS {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut completion_command(), "irsa-agent", &mut buf);
        if shell == Shell::Bash {
            buf = fix_bash_hyphen(&buf);
        }
        let path = comp_dir.join(name);
        fs_err::write(&path, buf)?;
        written.push(path);
    }
    let mut o = Outcome::new();
    for p in &written {
        o.line(p.display().to_string());
    }
    o.set(
        "files",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
    );
    Ok(o)
}

/// The command line the completions describe: the real one without its
/// hidden commands (`generate` is for packaging, not for tab completion).
fn completion_command() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new("irsa-agent")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommands(visible)
}

/// clap_complete's bash script spells the state of a command of a hyphenated
/// binary two ways (`irsa__agent__subcmd__apply` when walking the words,
/// `irsa__subcmd__agent__subcmd__apply` in the case arms), so no flag of a
/// command ever completes (clap-rs/clap#6421, open). Use the first spelling
/// in the arms. tests/python/test_packaging.py proves the flags complete.
fn fix_bash_hyphen(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("irsa__subcmd__agent", "irsa__agent")
        .into_bytes()
}

/// Every man page: `irsa-agent.1` and one `irsa-agent-<command>.1` per
/// (visible) command, as (file name, roff source).
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut pages = vec![("irsa-agent.1".to_string(), main_page(&cmd, &subs)?)];
    for sub in subs {
        let man = clap_mangen::Man::new(with_synopsis(sub.clone()));
        let mut page = Vec::new();
        man.render(&mut page)
            .with_context(|| format!("rendering the man page of {}", sub.get_name()))?;
        let mut extra = Roff::default();
        see_also(&mut extra, &[]);
        extra.to_writer(&mut page).context("rendering SEE ALSO")?;
        pages.push((man.get_filename(), page));
    }
    Ok(pages)
}

/// The main page: clap_mangen's sections, then EXIT STATUS, FILES and SEE
/// ALSO written here (clap's after_help would be a plain "EXTRA" section).
fn main_page(cmd: &clap::Command, subs: &[clap::Command]) -> Result<Vec<u8>> {
    let man = clap_mangen::Man::new(with_synopsis(cmd.clone()));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;

    let mut r = Roff::default();
    r.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_codes() {
        r.control("TP", []);
        r.text([bold(code)]);
        r.text([roman(meaning)]);
    }
    r.control("SH", ["FILES"]);
    for (path, what) in [
        (
            crate::paths::CONFIG_FILE,
            "The desired state apply reads when its flags are absent (see irsa-agent-apply(1)); \
             unknown keys are an error naming the line.",
        ),
        (
            crate::system::backup::BACKUP_DIR,
            "One directory per apply that wrote something: the files as they were, for rollback.",
        ),
        (
            "/usr/lib/systemd/system/irsa-agent.service",
            "A oneshot unit running apply with the config file, to converge the node at boot \
             (not enabled by the package).",
        ),
    ] {
        r.control("TP", []);
        r.text([italic(path)]);
        r.text([roman(what)]);
    }
    see_also(
        &mut r,
        &subs
            .iter()
            .map(|s| format!("irsa-agent-{}", s.get_name()))
            .collect::<Vec<_>>(),
    );
    r.to_writer(&mut page)
        .context("rendering the extra sections")?;
    man.render_version_section(&mut page)?;
    page.flush()?;
    Ok(page)
}

/// `cmd` with its SYNOPSIS spelled out: clap_mangen's own names each option
/// without its value (`[--root]`); this one says `[--root <DIR>]`, like --help.
fn with_synopsis(cmd: clap::Command) -> clap::Command {
    let usage = synopsis(&cmd);
    cmd.override_usage(usage)
}

/// One line: the command, its optional options in brackets, the groups one
/// of whose members is required, the required options, the positionals,
/// `<COMMAND>` when it has (visible) commands.
pub fn synopsis(cmd: &clap::Command) -> String {
    let mut parts = vec![cmd
        .get_bin_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()];
    let required_groups: Vec<Vec<String>> = cmd
        .get_groups()
        .filter(|g| g.is_required_set())
        .map(|g| g.get_args().map(|a| a.as_str().to_string()).collect())
        .collect();
    let in_group = |a: &clap::Arg| {
        required_groups
            .iter()
            .flatten()
            .any(|id| id == a.get_id().as_str())
    };
    let args: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| !a.is_hide_set()).collect();
    for a in args
        .iter()
        .filter(|a| !a.is_positional() && !a.is_required_set() && !in_group(a))
    {
        parts.push(format!("[{}]", synopsis_arg(a)));
    }
    for members in &required_groups {
        let alternatives: Vec<String> = members
            .iter()
            .filter_map(|id| args.iter().find(|a| a.get_id().as_str() == id))
            .map(|a| synopsis_arg(a))
            .collect();
        parts.push(format!("<{}>", alternatives.join(" | ")));
    }
    for a in args
        .iter()
        .filter(|a| !a.is_positional() && a.is_required_set() && !in_group(a))
    {
        parts.push(synopsis_arg(a));
    }
    for a in args.iter().filter(|a| a.is_positional()) {
        parts.push(synopsis_arg(a));
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        parts.push("<COMMAND>".to_string());
    }
    parts.join(" ")
}

/// `--root <DIR>`, `-v|--verbose...`, `--output <human|json>`, `--public-key <PATH>...`.
/// A value without a name of its own (only the field's, as derive gives it)
/// is spelled by its possible values when it has some.
fn synopsis_arg(a: &clap::Arg) -> String {
    use clap::ArgAction;
    let value = || {
        let id = a.get_id().as_str().to_uppercase();
        let names: Vec<String> = a
            .get_value_names()
            .map(|n| n.iter().map(|s| s.to_string()).collect())
            .unwrap_or_else(|| vec![id.clone()]);
        let possible: Vec<String> = a
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if names == [id] && !possible.is_empty() {
            format!("<{}>", possible.join("|"))
        } else {
            names
                .iter()
                .map(|n| format!("<{n}>"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    if a.is_positional() {
        return value();
    }
    let mut s = match (a.get_short(), a.get_long()) {
        (Some(short), Some(long)) => format!("-{short}|--{long}"),
        (Some(short), None) => format!("-{short}"),
        (None, Some(long)) => format!("--{long}"),
        (None, None) => String::new(),
    };
    match a.get_action() {
        ArgAction::Set => s = format!("{s} {}", value()),
        ArgAction::Append => s = format!("{s} {}...", value()),
        ArgAction::Count => s.push_str("..."),
        _ => {}
    }
    s
}

fn see_also(r: &mut Roff, pages: &[String]) {
    r.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = if pages.is_empty() {
        vec!["irsa-agent(1)".to_string()]
    } else {
        pages.iter().map(|p| format!("{p}(1)")).collect()
    };
    refs.push("systemctl(1)".to_string());
    r.text([roman(refs.join(", "))]);
}

/// The exit codes of `--help` as (code, meaning) pairs.
pub fn exit_codes() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in EXIT_CODES.lines().skip(1) {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        match t.split_once("  ") {
            Some((code, rest)) if indent == 2 && code.parse::<u8>().is_ok() => {
                out.push((code.to_string(), rest.trim().to_string()));
            }
            _ => {
                if let Some(last) = out.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(t);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_case_arms_use_the_state_the_word_loop_builds() {
        let mut buf = Vec::new();
        clap_complete::generate(Shell::Bash, &mut Cli::command(), "irsa-agent", &mut buf);
        let fixed = String::from_utf8(fix_bash_hyphen(&buf)).unwrap();
        assert!(fixed.contains("cmd=\"irsa__agent__subcmd__apply\""));
        assert!(
            fixed.contains("        irsa__agent__subcmd__apply)"),
            "no case arm for apply"
        );
        assert!(!fixed.contains("irsa__subcmd__agent"));
    }

    #[test]
    fn completions_offer_every_visible_command_and_global_flag_but_not_generate() {
        let script = |shell: Shell, cmd: &mut clap::Command| {
            let mut buf = Vec::new();
            clap_complete::generate(shell, cmd, "irsa-agent", &mut buf);
            String::from_utf8(buf).unwrap()
        };
        // "generate" other than in --generate-key / generate_key.
        let offers_generate = |s: &str| {
            s.replace("generate-key", "")
                .replace("generate_key", "")
                .contains("generate")
        };
        for (shell, _) in COMPLETIONS {
            let full = script(shell, &mut Cli::command());
            assert!(offers_generate(&full), "{shell}: the check sees nothing");
            let ours = script(shell, &mut completion_command());
            for want in ["apply", "rollback", "root", "output", "issuer", "audience"] {
                assert!(ours.contains(want), "{shell}: {want} missing");
            }
            assert!(
                !offers_generate(&ours),
                "{shell}: the hidden command is offered"
            );
        }
    }

    #[test]
    fn exit_codes_come_from_the_help_text() {
        let codes = exit_codes();
        let numbers: Vec<&str> = codes.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(numbers, ["0", "1", "2", "3", "4", "5"]);
        assert!(codes[5].1.starts_with("changed but not finished"));
        assert!(
            codes[3].1.contains("rolled back") && codes[3].1.contains("old configuration again")
        );
        assert!(
            codes[4].1.ends_with("then `irsa-agent rollback`)"),
            "{}",
            codes[4].1
        );
    }

    #[test]
    fn a_page_per_visible_command_and_none_for_generate() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "irsa-agent.1",
                "irsa-agent-detect.1",
                "irsa-agent-apply.1",
                "irsa-agent-verify.1",
                "irsa-agent-rollback.1",
                "irsa-agent-keygen.1",
                "irsa-agent-discovery.1",
                "irsa-agent-aws.1"
            ]
        );
        // roff escapes every '-' as '\-'.
        let text = |page: &[u8]| {
            String::from_utf8(page.to_vec())
                .unwrap()
                .replace("\\-", "-")
        };
        let main = text(&pages[0].1);
        for want in [
            ".SH \"EXIT STATUS\"",
            "/etc/irsa-agent/config.yaml",
            "irsa-agent-apply(1)",
        ] {
            assert!(main.contains(want), "{want} missing from the main page");
        }
        assert!(
            !main.contains("generate"),
            "the hidden command leaked into the man page"
        );
        let apply = text(&pages[2].1);
        assert!(apply.contains("--config") && apply.contains("--issuer"));
    }

    /// The SYNOPSIS section of a rendered page, roff escapes removed.
    fn synopsis_section(page: &[u8]) -> String {
        let text = String::from_utf8(page.to_vec())
            .unwrap()
            .replace("\\-", "-")
            .replace("\\fB", "")
            .replace("\\fR", "")
            .replace("\\fI", "");
        let start = text.find(".SH SYNOPSIS").expect("a SYNOPSIS section");
        let rest = &text[start + ".SH SYNOPSIS".len()..];
        rest[..rest.find(".SH").unwrap()].to_string()
    }

    #[test]
    fn the_man_synopsis_names_every_value() {
        let pages = man_pages().unwrap();
        let page = |name: &str| {
            let (_, p) = pages.iter().find(|(n, _)| n == name).unwrap();
            synopsis_section(p)
        };
        let main = page("irsa-agent.1");
        for want in [
            "[--root <DIR>]",
            "[--distro <NAME>]",
            "[--output <human|json>]",
            "[-v|--verbose...]",
            "<COMMAND>",
        ] {
            assert!(main.contains(want), "{want} missing from {main}");
        }
        let discovery = page("irsa-agent-discovery.1");
        for want in [
            "--issuer <URL>",
            "--public-key <PATH>...",
            "<--out <DIR> | --jwks-only>",
            "[--layout <kube|keys-json>]",
        ] {
            assert!(discovery.contains(want), "{want} missing from {discovery}");
        }
        let keygen = page("irsa-agent-keygen.1");
        assert!(
            keygen.contains("--private-key <PATH>")
                && keygen.contains("[--type <rsa-2048|rsa-4096|ec-p256>]"),
            "{keygen}"
        );
        // --help keeps clap's own usage line: the override is for the page only.
        let usage = Cli::command()
            .find_subcommand_mut("discovery")
            .unwrap()
            .render_usage()
            .to_string();
        assert!(usage.contains("<--out <DIR>|--jwks-only>"), "{usage}");
    }

    #[test]
    fn distro_completes_to_the_profile_names_in_every_shell() {
        let names = crate::distro::names();
        assert_eq!(names.len(), 6);
        for (shell, _) in COMPLETIONS {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut completion_command(), "irsa-agent", &mut buf);
            let script = String::from_utf8(buf).unwrap();
            let offered = match shell {
                // --distro)\n  COMPREPLY=($(compgen -W "microk8s ..." -- "${cur}"))
                Shell::Bash => {
                    let arm = &script[script.find("--distro)").expect("a --distro arm")..];
                    let line = arm.lines().nth(1).unwrap();
                    assert!(line.contains("compgen -W"), "{shell}: {line}");
                    line.to_string()
                }
                // '--distro=[...]:NAME:(microk8s ...)'
                Shell::Zsh => script
                    .lines()
                    .find(|l| l.starts_with("'--distro="))
                    .expect("a --distro spec")
                    .rsplit_once(":NAME:")
                    .expect("values after the value name")
                    .1
                    .to_string(),
                // complete ... -l distro ... -r -f -a "microk8s\t'' ..."
                _ => {
                    // The value list spans lines: "microk8s\t''\nminikube\t''...".
                    let at = script.find("-l distro").unwrap();
                    let line = &script[at..];
                    let values = line.split_once(" -a \"").expect("-a VALUES").1;
                    let values = values.split_once('"').unwrap().0;
                    assert!(
                        line.lines().next().unwrap().contains(" -f "),
                        "{shell}: file names offered: {line}"
                    );
                    values.to_string()
                }
            };
            for name in &names {
                assert!(
                    offered.contains(name.as_str()),
                    "{shell}: {name} not offered: {offered}"
                );
            }
        }
    }
}
