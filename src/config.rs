//! The config file (`/etc/irsa-agent/config.yaml`): the desired state `apply`
//! converges to when its flags are absent, shared by the systemd unit and
//! Ansible. Flags given on the command line override it.
//!
//! The file is the operator's, like the key files given with `--signing-key`:
//! it is read on the real host, never under `--root`. Without `--config`,
//! `apply` reads [`DEFAULT_PATH`] if it exists, except under `--root DIR` (a
//! test or a demo on a sysroot must not pick up this machine's desired state).
//! A path given with `--config` must exist. Relative paths inside the file are
//! relative to the file's directory.
//!
//! Strict: an unknown key or a value of the wrong type is an error naming the
//! file and the line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, ValueEnum};
use serde::{Deserialize, Deserializer};

use crate::cli::{ApplyOpts, GlobalOpts, KeyType, ServiceAccountRef};

/// Where `apply` looks for its config file on the host.
pub use crate::paths::CONFIG_FILE as DEFAULT_PATH;

/// The keys of the config file; each is the `apply` flag of the same name
/// (`audiences` is `--audience` repeated, `public_keys` `--public-key`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub signing_key: Option<PathBuf>,
    pub generate_key: Option<bool>,
    #[serde(default, deserialize_with = "key_type")]
    pub key_type: Option<KeyType>,
    pub public_keys: Option<Vec<PathBuf>>,
    #[serde(default, deserialize_with = "service_account")]
    pub service_account: Option<ServiceAccountRef>,
    #[serde(default, deserialize_with = "timeout")]
    pub timeout: Option<u64>,
    pub no_restart: Option<bool>,
    pub allow_port: Option<bool>,
    /// `--keep-backups`.
    #[serde(default, deserialize_with = "backups_keep")]
    pub backups_keep: Option<u64>,
}

impl ConfigFile {
    /// Parse the text of the file at `path` (named in errors). An empty file,
    /// or one holding only comments, sets nothing.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let located = |e: serde_norway::Error| {
            // serde_norway places the errors of our own checks (below) at the
            // start of the mapping; they begin with their key, whose line we find.
            let msg = e.to_string();
            let by_key = msg
                .split_once(' ')
                .and_then(|(key, _)| line_of_key(text, key));
            match (by_key, e.location()) {
                (Some(line), _) => anyhow::anyhow!("{}, line {line}: {msg}", path.display()),
                // The YAML parser's message holds the position the prefix
                // gives: state it once.
                (None, Some(l)) => anyhow::anyhow!(
                    "{}, line {}: {}",
                    path.display(),
                    l.line(),
                    without_position(&msg, l.line(), l.column())
                ),
                (None, None) => anyhow::anyhow!("{}: {msg}", path.display()),
            }
        };
        let value: serde_norway::Value = serde_norway::from_str(text).map_err(located)?;
        if value.is_null() {
            return Ok(Self::default());
        }
        if !value.is_mapping() {
            bail!(
                "{}: the config file must be a mapping of keys (issuer, audiences, ...)",
                path.display()
            );
        }
        let mut config: Self = serde_norway::from_str(text).map_err(located)?;
        if config.signing_key.is_some() && config.generate_key == Some(true) {
            bail!(
                "{}: signing_key and generate_key: true exclude each other",
                path.display()
            );
        }
        if config.key_type.is_some() && config.generate_key != Some(true) {
            bail!(
                "{}: key_type is only used with generate_key: true",
                path.display()
            );
        }
        if config.audiences.as_ref().is_some_and(Vec::is_empty) {
            bail!(
                "{}: audiences is empty; leave it out for the default (sts.amazonaws.com)",
                path.display()
            );
        }
        // Paths inside the file are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(p) = &mut config.signing_key {
            *p = base.join(&*p);
        }
        for p in config.public_keys.iter_mut().flatten() {
            *p = base.join(&*p);
        }
        Ok(config)
    }

    /// Read the file at `path` (on the host).
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(path).context("reading the config file")?;
        Self::parse(&text, path)
    }
}

/// The config file `apply` reads: `--config`, else [`DEFAULT_PATH`] when it
/// exists and no `--root` (other than `/`) is given, else none.
pub fn config_path(global: &GlobalOpts, opts: &ApplyOpts) -> Option<PathBuf> {
    if let Some(p) = &opts.config {
        return Some(p.clone());
    }
    let default = Path::new(DEFAULT_PATH);
    let on_host = global.root.as_deref().is_none_or(|r| r == Path::new("/"));
    (on_host && default.exists()).then(|| default.to_path_buf())
}

/// `apply`'s options with the config file merged in: a flag given on the
/// command line wins over the file, the file over the built-in default.
/// `matches` are `apply`'s own (they tell given flags from defaults).
pub fn apply_opts(
    global: &GlobalOpts,
    opts: &ApplyOpts,
    matches: Option<&ArgMatches>,
) -> Result<ApplyOpts> {
    let Some(path) = config_path(global, opts) else {
        return Ok(opts.clone());
    };
    let file = ConfigFile::load(&path)?;
    let given =
        |id: &str| matches.and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine);
    Ok(merge(opts, &file, given))
}

/// Merge `file` under `opts`; `given(id)` says whether the flag with that
/// clap id was on the command line.
pub fn merge(opts: &ApplyOpts, file: &ConfigFile, given: impl Fn(&str) -> bool) -> ApplyOpts {
    let mut out = opts.clone();
    if out.issuer.is_none() {
        out.issuer = file.issuer.clone();
    }
    if let (false, Some(a)) = (given("audiences"), &file.audiences) {
        out.audiences = a.clone();
    }
    // The signing key is one choice: given key, generated key, or the
    // current one. A flag for either replaces the file's choice.
    if !given("signing_key") && !given("generate_key") {
        out.signing_key = file.signing_key.clone();
        out.generate_key = file.generate_key.unwrap_or(false);
        if let Some(t) = file.key_type {
            out.key_type = t;
        }
    }
    if let (false, Some(p)) = (given("public_keys"), &file.public_keys) {
        out.public_keys = p.clone();
    }
    if let (false, Some(sa)) = (given("service_account"), &file.service_account) {
        out.service_account = sa.clone();
    }
    if let (false, Some(t)) = (given("timeout"), file.timeout) {
        out.wait.timeout = t;
    }
    if let (false, Some(n)) = (given("keep_backups"), file.backups_keep) {
        out.keep_backups = Some(n);
    }
    // A switch can only be turned on from the command line.
    out.no_restart |= file.no_restart.unwrap_or(false);
    out.allow_port |= file.allow_port.unwrap_or(false);
    out
}

/// `msg` without its " at line LINE column COLUMN" (once), which the error's
/// prefix already states.
fn without_position(msg: &str, line: usize, column: usize) -> String {
    msg.replacen(&format!(" at line {line} column {column}"), "", 1)
}

/// The line (1-based) of top-level key `key`, for the errors of our own
/// value checks, which start with the key's name.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    if !FIELDS.contains(&key) {
        return None;
    }
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

const FIELDS: [&str; 11] = [
    "issuer",
    "audiences",
    "signing_key",
    "generate_key",
    "key_type",
    "public_keys",
    "service_account",
    "timeout",
    "no_restart",
    "allow_port",
    "backups_keep",
];

fn service_account<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ServiceAccountRef>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("service_account {s:?}: {e}")))
}

fn key_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyType>, D::Error> {
    let s = String::deserialize(d)?;
    KeyType::from_str(&s, false).map(Some).map_err(|_| {
        let names: Vec<String> = KeyType::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        serde::de::Error::custom(format!("key_type {s:?} is not one of {}", names.join(", ")))
    })
}

fn backups_keep<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = u64::deserialize(d)?;
    if !(1..=10_000).contains(&n) {
        return Err(serde::de::Error::custom(format!(
            "backups_keep {n} is not in 1..=10000"
        )));
    }
    Ok(Some(n))
}

fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let t = u64::deserialize(d)?;
    if !(1..=3600).contains(&t) {
        return Err(serde::de::Error::custom(format!(
            "timeout {t} is not in 1..=3600 seconds"
        )));
    }
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    use crate::cli::{Cli, Command};

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(text, Path::new("/etc/irsa-agent/config.yaml"))
    }

    /// `apply` parsed from `args`, merged with `file` as main does it.
    fn merged(args: &[&str], file: &ConfigFile) -> ApplyOpts {
        let mut argv = vec!["irsa-agent", "apply"];
        argv.extend_from_slice(args);
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let Command::Apply(opts) = &cli.command else {
            unreachable!()
        };
        let sub = matches.subcommand_matches("apply").unwrap();
        merge(opts, file, |id| {
            sub.value_source(id) == Some(ValueSource::CommandLine)
        })
    }

    const FULL: &str = "\
# desired state
issuer: https://oidc.example.com/c1
audiences: [sts.amazonaws.com, api://AzureADTokenExchange]
generate_key: true
key_type: ec-p256
public_keys:
  - keys/other.pub
  - /srv/old.pub
service_account: kube-system/irsa-check
timeout: 30
no_restart: true
allow_port: false
backups_keep: 3
";

    #[test]
    fn every_key_parses_and_relative_paths_follow_the_file() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.issuer.as_deref(), Some("https://oidc.example.com/c1"));
        assert_eq!(
            c.audiences.unwrap(),
            ["sts.amazonaws.com", "api://AzureADTokenExchange"]
        );
        assert_eq!(c.generate_key, Some(true));
        assert_eq!(c.key_type, Some(KeyType::EcP256));
        assert_eq!(
            c.public_keys.unwrap(),
            [
                PathBuf::from("/etc/irsa-agent/keys/other.pub"),
                PathBuf::from("/srv/old.pub")
            ]
        );
        assert_eq!(
            c.service_account.unwrap().to_string(),
            "kube-system/irsa-check"
        );
        assert_eq!(c.timeout, Some(30));
        assert_eq!(c.no_restart, Some(true));
        assert_eq!(c.allow_port, Some(false));
        assert_eq!(c.backups_keep, Some(3));
        let e = parse("backups_keep: 0\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("backups_keep 0"), "{e}");
    }

    #[test]
    fn the_key_list_matches_the_struct() {
        let e = parse("nope: 1\n").unwrap_err().to_string();
        let expected = e.split_once("expected one of").unwrap().1;
        assert_eq!(expected.matches('`').count(), 2 * FIELDS.len(), "{e}");
        for f in FIELDS {
            assert!(expected.contains(&format!("`{f}`")), "{f}: {e}");
        }
    }

    #[test]
    fn a_file_of_comments_sets_nothing() {
        assert_eq!(parse("").unwrap(), ConfigFile::default());
        assert_eq!(
            parse("# issuer: https://x.example.com\n\n").unwrap(),
            ConfigFile::default()
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_file_and_line() {
        let cases = [
            (
                "issuer: https://a.example.com\nissuers: [x]\n",
                2,
                "unknown field `issuers`",
            ),
            ("audiences: sts.amazonaws.com\n", 1, "expected a sequence"),
            (
                "issuer: https://a.example.com\n\ntimeout: soon\n",
                3,
                "timeout",
            ),
            (
                "issuer: https://a.example.com\ntimeout: 0\n",
                2,
                "not in 1..=3600",
            ),
            (
                "generate_key: true\nkey_type: dsa\n",
                2,
                "key_type \"dsa\" is not one of rsa-2048",
            ),
            (
                "issuer: https://a.example.com\nservice_account: default\n",
                2,
                "NAMESPACE/NAME",
            ),
            ("no_restart: maybe\n", 1, "no_restart"),
        ];
        for (text, line, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("/etc/irsa-agent/config.yaml, line {line}: ")),
                "{text:?}: {e}"
            );
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn contradictions_and_non_mappings_are_refused() {
        for (text, want) in [
            (
                "signing_key: a.key\ngenerate_key: true\n",
                "exclude each other",
            ),
            ("key_type: rsa-4096\n", "only used with generate_key"),
            ("audiences: []\n", "audiences is empty"),
            ("- issuer\n", "must be a mapping"),
            ("issuer: [unclosed\n", "line 1"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_syntax_error_states_its_position_once() {
        let e = parse("issuer: [unclosed\n").unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/irsa-agent/config.yaml, line 2: did not find expected"),
            "{e}"
        );
        assert_eq!(e.matches("line 2").count(), 1, "{e}");
        let e = parse("issuer: https://a.example.com\nissuers: [x]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/irsa-agent/config.yaml, line 2: unknown field `issuers`"));
        assert_eq!(e.matches("line 2").count(), 1, "{e}");
    }

    #[test]
    fn the_file_fills_in_what_the_command_line_leaves_out() {
        let file = parse(FULL).unwrap();
        let o = merged(&[], &file);
        assert_eq!(o.issuer.as_deref(), Some("https://oidc.example.com/c1"));
        assert_eq!(o.audiences, file.audiences.clone().unwrap());
        assert!(o.generate_key);
        assert_eq!(o.key_type, KeyType::EcP256);
        assert_eq!(o.public_keys, file.public_keys.clone().unwrap());
        assert_eq!(o.service_account.to_string(), "kube-system/irsa-check");
        assert_eq!(o.wait.timeout, 30);
        assert!(o.no_restart);
        assert!(!o.allow_port);
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse(FULL).unwrap();
        let o = merged(
            &[
                "--issuer",
                "https://b.example.com",
                "--audience",
                "x",
                "--signing-key",
                "my.key",
                "--public-key",
                "p.pub",
                "--service-account",
                "a/b",
                "--timeout",
                "5",
                "--allow-port",
            ],
            &file,
        );
        assert_eq!(o.issuer.as_deref(), Some("https://b.example.com"));
        assert_eq!(o.audiences, ["x"]);
        assert_eq!(o.signing_key, Some(PathBuf::from("my.key")));
        assert!(
            !o.generate_key,
            "--signing-key replaces the file's generate_key"
        );
        assert_eq!(o.public_keys, [PathBuf::from("p.pub")]);
        assert_eq!(o.service_account.to_string(), "a/b");
        assert_eq!(o.wait.timeout, 5);
        assert!(o.allow_port);
    }

    #[test]
    fn without_a_file_the_built_in_defaults_stay() {
        let o = merged(
            &["--issuer", "https://b.example.com"],
            &ConfigFile::default(),
        );
        assert_eq!(o.audiences, ["sts.amazonaws.com"]);
        assert_eq!(o.service_account.to_string(), "default/default");
        assert_eq!(o.wait.timeout, 120);
        assert!(!o.generate_key && o.signing_key.is_none() && !o.no_restart);
    }

    fn parse_cli(args: &[&str]) -> Cli {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("irsa-agent").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_default_file_is_not_read_under_root() {
        for (args, want) in [
            (&["--root", "x", "apply"][..], None),
            (
                &["--root", "x", "apply", "--config", "c.yaml"][..],
                Some(PathBuf::from("c.yaml")),
            ),
        ] {
            let cli = parse_cli(args);
            let Command::Apply(opts) = &cli.command else {
                unreachable!()
            };
            assert_eq!(config_path(&cli.global, opts), want, "{args:?}");
        }
    }
}
