use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use irsa_agent::cli::{Cli, Command, OutputMode};
use irsa_agent::output::{error_chain, Exit, Failure, Outcome};
use irsa_agent::{apply, config, detect, generate, keys, rollback, verify};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging(&cli);
    let mode = cli.global.output;
    let result = match &cli.command {
        Command::Detect(o) => detect::run(&cli.global, o),
        // The config file fills in the flags not given (matches tell which).
        Command::Apply(o) => {
            config::apply_opts(&cli.global, o, matches.subcommand_matches("apply"))
                .and_then(|o| apply::run(&cli.global, &o))
        }
        Command::Verify(o) => verify::run(&cli.global, o),
        Command::Rollback(o) => rollback::run(&cli.global, o),
        Command::Keygen(o) => keys::commands::keygen(&cli.global, o),
        Command::Discovery(o) => keys::commands::discovery(&cli.global, o),
        Command::Aws(o) => keys::commands::aws(&cli.global, o),
        Command::Generate(o) => generate::run(&cli.global, o),
    };
    match result {
        Ok(outcome) => {
            print_outcome(mode, &outcome);
            ExitCode::from(Exit::Ok as u8)
        }
        Err(err) => {
            print_error(mode, &cli.command, &err);
            let exit = Failure::of(&err).map_or(Exit::Failed, |f| f.exit);
            ExitCode::from(exit as u8)
        }
    }
}

/// A command-line mistake (clap's error, exit 2). With `--output json` it is
/// reported as the JSON object every other error is, on stdout; `--help` and
/// `--version` print as usual.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || !json_requested(std::env::args_os().skip(1))
    {
        e.exit();
    }
    let message = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        "no command given (irsa-agent --help lists them)".to_string()
    } else {
        // The lines before the usage: the mistake and any hint (the
        // possible values), without clap's "error: " prefix.
        let rendered = e.render().to_string();
        let text: Vec<&str> = rendered
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        let text = text.join(" ");
        text.strip_prefix("error: ").unwrap_or(&text).to_string()
    };
    let mut obj = serde_json::Map::new();
    obj.insert("error".into(), message.clone().into());
    obj.insert("error_chain".into(), vec![message].into());
    println!("{}", serde_json::Value::Object(obj));
    ExitCode::from(Exit::Usage as u8)
}

/// Did the command line ask for `--output json` (the last `--output` wins,
/// as in clap), even though it did not parse?
fn json_requested(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let mut json = false;
    let mut args = args.map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = args.next() {
        if a == "--" {
            break;
        } else if a == "--output" {
            json = args.next().as_deref() == Some("json");
        } else if let Some(v) = a.strip_prefix("--output=") {
            json = v == "json";
        }
    }
    json
}

fn init_logging(cli: &Cli) {
    let default = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // kube-rs logs every non-2xx answer at ERROR: while /readyz is polled
    // those are expected, so its own logs appear only from -vv on.
    let kube = if cli.global.verbose >= 2 {
        default
    } else {
        "off"
    };
    let filter = EnvFilter::try_from_env("IRSA_AGENT_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},kube_client={kube},kube={kube}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();
}

fn print_outcome(mode: OutputMode, outcome: &Outcome) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = match (&outcome.raw_stdout, mode) {
        (Some(raw), _) => out.write_all(raw.as_bytes()),
        (None, OutputMode::Json) => {
            writeln!(out, "{}", serde_json::Value::Object(outcome.json.clone()))
        }
        (None, OutputMode::Human) => out.write_all(outcome.human.as_bytes()),
    };
}

fn print_error(mode: OutputMode, command: &Command, err: &anyhow::Error) {
    let chain = error_chain(err);
    match mode {
        OutputMode::Json => {
            let mut obj = serde_json::Map::new();
            if matches!(command, Command::Apply(_)) {
                obj.insert("changed".into(), false.into());
                obj.insert("rolled_back".into(), false.into());
            }
            if let Some(f) = Failure::of(err) {
                obj.extend(f.json.clone());
            }
            // The whole chain on one line: what Ansible shows as the task's msg.
            obj.insert("error".into(), chain.join(": ").into());
            obj.insert("error_chain".into(), chain.clone().into());
            println!("{}", serde_json::Value::Object(obj));
        }
        OutputMode::Human => {
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "error: {}", chain[0]);
            for cause in &chain[1..] {
                let _ = writeln!(e, "  caused by: {cause}");
            }
        }
    }
}
