//! The command line: one options struct per command, nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Make a self-managed Kubernetes control plane usable with AWS IAM Roles for
/// Service Accounts (IRSA) and GCP/Azure workload identity.
///
/// irsa-agent detects the distribution (MicroK8s, kubeadm, minikube, k3s, RKE2,
/// k0s), rewrites the kube-apiserver service-account flags with the right issuer
/// precedence, installs key files, and writes the discovery documents to publish.
#[derive(Debug, Parser)]
#[command(
    name = "irsa-agent",
    version,
    about,
    long_about,
    propagate_version = true,
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Shown at the end of `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success, whether or not anything changed
  1  failure; nothing was changed (or every write was undone)
  2  invalid command line
  3  apply failed after writing (restart, health or verify) and rolled back:
     the node runs its old configuration again
  4  apply failed and the rollback did not bring the apiserver back: the node
     needs attention (see the message, then `irsa-agent rollback`)
  5  changed but not finished: files were changed (listed in the output) and a
     later step failed, e.g. rollback restored the files but could not restart
     the apiserver";

/// The help heading of the options valid with every command, listed apart
/// from each command's own.
pub const GLOBAL_HEADING: &str = "Global options";

/// Options valid before or after any command.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = GLOBAL_HEADING)]
pub struct GlobalOpts {
    /// Operate on a sysroot: the node's files (the distribution's configuration,
    /// keys, kubeconfig, irsa-agent's backups and state) and every absolute path
    /// given to keygen, discovery and aws are resolved under DIR (no root
    /// privileges needed then). apply's --config, --signing-key and --public-key
    /// are read where you run it: they are your inputs, not the node's files.
    /// Default: the real root, /.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Skip detection and treat the node as this distribution: microk8s,
    /// kubeadm, minikube, k3s, rke2 or k0s.
    #[arg(long, global = true, value_name = "NAME", value_parser = distro_names())]
    pub distro: Option<String>,

    /// Output format. With json, stdout carries exactly one JSON object and
    /// every log line goes to stderr.
    #[arg(long, global = true, value_enum, default_value_t = OutputMode::Human)]
    pub output: OutputMode,

    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// `--distro`'s values: the names of the embedded profiles (distros/*.toml),
/// so the completions offer them and a typo is a command-line error (exit 2).
fn distro_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::distro::names())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the distribution, its config files and the service-account settings
    /// the apiserver runs with (issuers in order, signing key, key files,
    /// audiences), each with the line it comes from.
    Detect(DetectOpts),
    /// Converge the node to the desired issuer, audiences and keys, restart the
    /// apiserver and prove the result with a fresh token.
    ///
    /// The new issuer is put first (it signs new tokens); every old issuer,
    /// key file and effective audience stays accepted, so existing tokens keep
    /// working. Only the lines that must change are changed. A second identical
    /// run changes nothing.
    ///
    /// The loop: plan, back up, write, restart (systemd unit through D-Bus, or
    /// wait for the kubelet to replace the static pod), wait for /readyz,
    /// verify a fresh token and that a token issued before the change still
    /// authenticates. If any step after the write fails, the old files are put
    /// back, the apiserver is restarted again, and apply exits with code 3.
    ///
    /// Files: every write is atomic and keeps the file's mode and owner (a
    /// 0444 file is replaced and stays 0444). A file that is a symbolic link
    /// is refused, never written through; links in the directories above it
    /// are followed, inside --root. A file that cannot be written (immutable
    /// attribute, read-only mount) stops the run before anything is written.
    /// Private keys irsa-agent installs are created 0600. An existing signing
    /// key readable by group or others, or files owned by another user, are
    /// only warned about: irsa-agent never changes their mode or owner.
    Apply(ApplyOpts),
    /// Prove the running apiserver signs as configured: request a fresh token
    /// (TokenRequest), check iss, aud, kid and the signature with the installed
    /// public key, and have the apiserver authenticate it (TokenReview). Prints
    /// the decoded claims, never the token.
    Verify(VerifyOpts),
    /// Put back the files of the last apply from its backup and restart the
    /// apiserver.
    Rollback(RollbackOpts),
    /// Generate a service-account signing key pair (PKCS#8 private key, 0600,
    /// and PKIX public key) and print its key id.
    Keygen(KeygenOpts),
    /// Write the OpenID discovery document and JWKS to publish at the issuer URL.
    Discovery(DiscoveryOpts),
    /// Write the AWS IAM OIDC provider input and a role trust policy.
    Aws(AwsOpts),
    /// Write the man pages and the bash, zsh and fish completions generated
    /// from this command line into DIR (for packaging).
    #[command(hide = true)]
    Generate(GenerateOpts),
}

#[derive(Debug, Args)]
pub struct GenerateOpts {
    /// Output directory: man pages go to DIR/man, completions to DIR/completions.
    #[arg(value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct DetectOpts {}

#[derive(Debug, Args, Clone)]
pub struct ApplyOpts {
    /// The issuer URL to sign new tokens with (https, no query, no fragment).
    /// Discovery documents must be served under it. Required unless the
    /// config file sets `issuer`.
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,

    /// The desired state as YAML (issuer, audiences, signing_key,
    /// generate_key, key_type, public_keys, service_account, timeout,
    /// no_restart, allow_port, backups_keep); flags given here override it. Read on the host,
    /// relative paths in it are relative to it. Default: /etc/irsa-agent/config.yaml
    /// if it exists and no --root is given.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// An audience tokens may be issued for (repeatable). Added to every audience
    /// the apiserver already accepts.
    #[arg(
        long = "audience",
        value_name = "A",
        default_value = "sts.amazonaws.com"
    )]
    pub audiences: Vec<String>,

    /// Install this private key (PEM) into the distribution's key directory and
    /// sign with it. Without it (and without --generate-key) the cluster keeps
    /// its current signing key.
    #[arg(long, value_name = "PATH", conflicts_with = "generate_key")]
    pub signing_key: Option<PathBuf>,

    /// Generate a new key pair in the distribution's key directory and sign with it.
    #[arg(long)]
    pub generate_key: bool,

    /// Key type for --generate-key.
    #[arg(long = "key-type", value_enum, default_value_t = KeyType::Rsa2048, requires = "generate_key")]
    pub key_type: KeyType,

    /// An extra public key file to accept tokens from (repeatable), e.g. the key
    /// of another cluster or an older key during rotation.
    #[arg(long = "public-key", value_name = "PATH")]
    pub public_keys: Vec<PathBuf>,

    /// Change nothing; report whether anything would change.
    #[arg(long)]
    pub check: bool,

    /// Print unified diffs of every file that changes (or would change).
    #[arg(long)]
    pub diff: bool,

    /// Write the configuration but do not restart the apiserver, wait for it or
    /// verify; the output says a restart is pending. (kubeadm's and minikube's
    /// kubelet restarts the static pod by itself when the manifest changes.)
    #[arg(long)]
    pub no_restart: bool,

    /// The service account whose token proves the change (NAMESPACE/NAME).
    #[arg(long, value_name = "NS/NAME", default_value = "default/default")]
    pub service_account: ServiceAccountRef,

    #[command(flatten)]
    pub wait: WaitOpts,

    /// Allow an issuer URL with a port (AWS rejects such issuers).
    #[arg(long)]
    pub allow_port: bool,

    /// How many finished backups to keep under /var/lib/irsa-agent/backups
    /// (they hold copies of replaced private keys); pending ones are always
    /// kept. Default: 10.
    #[arg(long = "keep-backups", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub keep_backups: Option<u64>,
}

impl ApplyOpts {
    /// `--keep-backups`, or the default.
    pub fn keep_backups(&self) -> usize {
        self.keep_backups
            .map_or(crate::system::backup::DEFAULT_KEEP, |n| n as usize)
    }

    /// The issuer, from the flag or the config file.
    pub fn issuer(&self) -> anyhow::Result<&str> {
        self.issuer.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "no issuer: pass --issuer URL, or set `issuer:` in the config file (--config PATH, default {})",
                crate::paths::CONFIG_FILE
            )
        })
    }
}

/// How long to wait for the apiserver.
#[derive(Debug, Args, Clone)]
pub struct WaitOpts {
    /// Seconds for the whole run's waits and calls to the apiserver and
    /// systemd (the restart job, the kubelet starting the new static pod,
    /// /readyz answering ok, verification). When apply rolls back, the
    /// rollback gets as long again (at least 30 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

impl WaitOpts {
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout)
    }
}

/// verify restarts nothing: its --timeout is only the wait for the apiserver.
const VERIFY_TIMEOUT_HELP: &str =
    "Seconds to wait for the apiserver to answer /readyz ok before the token is requested";

/// `NAMESPACE/NAME` of a service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for ServiceAccountRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ns, name) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not NAMESPACE/NAME (e.g. default/default)"))?;
        crate::keys::aws::validate_namespace(ns).map_err(|e| e.to_string())?;
        crate::keys::aws::validate_service_account(name).map_err(|e| e.to_string())?;
        Ok(Self {
            namespace: ns.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Args)]
#[command(mut_arg("timeout", |a| a.help(VERIFY_TIMEOUT_HELP)))]
pub struct VerifyOpts {
    /// The issuer the token must carry. Default: the first
    /// --service-account-issuer configured on the node (the one that signs).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,

    /// The audience to request the token for; it must be in the token's aud.
    #[arg(long, value_name = "A", default_value = "sts.amazonaws.com")]
    pub audience: String,

    /// The service account to request the token for (NAMESPACE/NAME).
    #[arg(long, value_name = "NS/NAME", default_value = "default/default")]
    pub service_account: ServiceAccountRef,

    /// Also fetch <issuer>/.well-known/openid-configuration and its jwks_uri over
    /// HTTPS and validate the token with the published key, as AWS STS does.
    #[arg(long)]
    pub public: bool,

    /// With --public: PEM CA certificate(s) to trust besides the system's.
    #[arg(long, value_name = "PATH", requires = "public")]
    pub ca_file: Option<PathBuf>,

    /// Also check the token against the AWS IAM OIDC provider: the
    /// oidc-provider.json `irsa-agent aws` wrote, or the output of `aws iam
    /// get-open-id-connect-provider`. Its Url must be the token's iss exactly
    /// and its ClientIDList must hold the token's audience.
    #[arg(long, value_name = "PATH")]
    pub aws_provider: Option<PathBuf>,

    #[command(flatten)]
    pub wait: WaitOpts,
}

#[derive(Debug, Args)]
pub struct RollbackOpts {
    /// The backup to restore (a directory name under /var/lib/irsa-agent/backups).
    /// Default: the most recent one.
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,

    /// Put the files back but do not restart the apiserver or wait for it.
    #[arg(long)]
    pub no_restart: bool,

    /// Change nothing; show what would be restored.
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub wait: WaitOpts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum KeyType {
    /// RSA 2048 bits (RS256).
    #[default]
    #[value(name = "rsa-2048")]
    Rsa2048,
    /// RSA 4096 bits (RS256).
    #[value(name = "rsa-4096")]
    Rsa4096,
    /// ECDSA on NIST P-256 (ES256).
    #[value(name = "ec-p256")]
    EcP256,
}

#[derive(Debug, Args)]
pub struct KeygenOpts {
    /// Where to write the private key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "PATH")]
    pub private_key: PathBuf,

    /// Where to write the public key (PKIX PEM, mode 0644).
    #[arg(long, value_name = "PATH")]
    pub public_key: PathBuf,

    /// Key type.
    #[arg(long = "type", value_enum, default_value_t = KeyType::Rsa2048)]
    pub key_type: KeyType,

    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum JwksLayout {
    /// The apiserver's own layout: `<issuer>/openid/v1/jwks`.
    #[default]
    Kube,
    /// `<issuer>/keys.json`, as many hand-written setups use.
    KeysJson,
}

/// `--out DIR`, `--jwks-only` or both: the usage line shows that one is needed.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("destination")
        .args(["out", "jwks_only"])
        .required(true)
        .multiple(true)
))]
pub struct DiscoveryOpts {
    /// The issuer URL exactly as the apiserver's first --service-account-issuer.
    #[arg(long, value_name = "URL")]
    pub issuer: String,

    /// A key file to publish (repeatable): public or private keys, certificates,
    /// multi-block PEM files, read the way kube-apiserver reads key files.
    #[arg(long = "public-key", value_name = "PATH", required = true)]
    pub public_keys: Vec<PathBuf>,

    /// Directory to write the documents into (required unless --jwks-only).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Where the JWKS is served.
    #[arg(long, value_enum, default_value_t = JwksLayout::Kube)]
    pub layout: JwksLayout,

    /// Write only the bare JWKS to stdout (for GCP's --jwk-json-path).
    #[arg(long)]
    pub jwks_only: bool,

    /// Allow an issuer URL with a port (AWS rejects such issuers).
    #[arg(long)]
    pub allow_port: bool,
}

#[derive(Debug, Args)]
pub struct AwsOpts {
    /// The issuer URL exactly as the apiserver's first --service-account-issuer.
    #[arg(long, value_name = "URL")]
    pub issuer: String,

    /// Client ID (audience) to register (repeatable).
    #[arg(
        long = "audience",
        value_name = "A",
        default_value = "sts.amazonaws.com"
    )]
    pub audiences: Vec<String>,

    /// Namespace whose service account(s) may assume the role.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// One service account in --namespace (otherwise any in the namespace).
    #[arg(long, value_name = "SA", requires = "namespace")]
    pub service_account: Option<String>,

    /// Role name used in the printed commands.
    #[arg(long, value_name = "NAME")]
    pub role_name: Option<String>,

    /// PEM file holding the top CA certificate of the issuer's TLS chain; its
    /// SHA-1 fingerprint becomes the thumbprint.
    #[arg(long, value_name = "PATH", conflicts_with = "fetch_thumbprint")]
    pub ca_file: Option<PathBuf>,

    /// Connect to the issuer host and take the thumbprint from its chain.
    #[arg(long)]
    pub fetch_thumbprint: bool,

    /// With --fetch-thumbprint: take the thumbprint even when the host's TLS
    /// chain is not trusted by this machine (check it out of band).
    #[arg(long, requires = "fetch_thumbprint")]
    pub insecure_skip_tls_verify: bool,

    /// Directory to write oidc-provider.json and trust-policy.json into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Allow an issuer URL with a port (AWS rejects such issuers).
    #[arg(long)]
    pub allow_port: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn service_accounts_are_namespace_slash_name() {
        let sa: ServiceAccountRef = "kube-system/coredns".parse().unwrap();
        assert_eq!(
            (sa.namespace.as_str(), sa.name.as_str()),
            ("kube-system", "coredns")
        );
        assert_eq!(sa.to_string(), "kube-system/coredns");
        for bad in ["default", "a/b/c", "/x", "x/", "Default/x"] {
            assert!(bad.parse::<ServiceAccountRef>().is_err(), "{bad}");
        }
    }

    /// `irsa-agent <args> --help`, as printed.
    fn help(args: &[&str]) -> String {
        let mut argv = vec!["irsa-agent"];
        argv.extend_from_slice(args);
        argv.push("--help");
        let e = Cli::try_parse_from(argv).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        e.render().to_string()
    }

    #[test]
    fn global_options_have_their_own_heading_after_the_commands_own() {
        for cmd in [
            "detect",
            "apply",
            "verify",
            "rollback",
            "keygen",
            "discovery",
            "aws",
        ] {
            let text = help(&[cmd]);
            let (own, global) = text
                .split_once("\nOptions:\n")
                .unwrap()
                .1
                .split_once(&format!("\n{GLOBAL_HEADING}:\n"))
                .unwrap_or_else(|| panic!("{cmd}: no {GLOBAL_HEADING} heading:\n{text}"));
            // Option lines, not their descriptions (indented further).
            let flags = |part: &str| -> Vec<String> {
                part.lines()
                    .filter(|l| l.starts_with("  -") || l.starts_with("      --"))
                    .map(|l| l.trim().to_string())
                    .collect()
            };
            let (own, global) = (flags(own), flags(global));
            for flag in ["--root", "--distro", "--output", "--verbose", "--quiet"] {
                let has = |lines: &[String]| lines.iter().any(|l| l.contains(flag));
                assert!(has(&global), "{cmd}: {flag} not under the heading");
                assert!(!has(&own), "{cmd}: {flag} among the command's own");
            }
        }
        let apply = help(&["apply"]);
        let own = apply.split_once(GLOBAL_HEADING).unwrap().0;
        assert!(own.contains("--signing-key") && own.contains("--generate-key"));
    }

    #[test]
    fn discovery_usage_says_out_or_jwks_only_is_needed() {
        let usage = help(&["discovery"]);
        let usage = usage.lines().find(|l| l.starts_with("Usage:")).unwrap();
        assert!(usage.contains("<--out <DIR>|--jwks-only>"), "{usage}");
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "irsa-agent",
                "discovery",
                "--issuer",
                "https://a.example.com",
                "--public-key",
                "k.pub",
            ];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        assert_eq!(
            parse(&[]).unwrap_err().kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        parse(&["--out", "d"]).unwrap();
        parse(&["--jwks-only"]).unwrap();
        parse(&["--out", "d", "--jwks-only"]).unwrap();
    }

    #[test]
    fn verify_timeout_speaks_of_waiting_not_of_restarting() {
        let text = help(&["verify"]);
        let timeout = text
            .split_once("--timeout <SECONDS>")
            .unwrap()
            .1
            .split("\n\n")
            .next()
            .unwrap();
        assert!(timeout.contains("/readyz"), "{timeout}");
        assert!(
            !timeout.contains("restart") && !timeout.contains("static pod"),
            "{timeout}"
        );
    }

    #[test]
    fn distro_takes_only_the_profile_names() {
        for name in crate::distro::names() {
            let cli = Cli::try_parse_from(["irsa-agent", "--distro", &name, "detect"]).unwrap();
            assert_eq!(cli.global.distro, Some(name));
        }
        let e = Cli::try_parse_from(["irsa-agent", "--distro", "kubedm", "detect"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("kubeadm"), "{e}");
    }

    #[test]
    fn global_options_work_after_the_command() {
        let cli = Cli::try_parse_from([
            "irsa-agent",
            "detect",
            "--root",
            "some/dir",
            "--output",
            "json",
            "--distro",
            "k3s",
        ])
        .expect("parses");
        assert_eq!(
            cli.global.root.as_deref(),
            Some(std::path::Path::new("some/dir"))
        );
        assert_eq!(cli.global.output, OutputMode::Json);
        assert_eq!(cli.global.distro.as_deref(), Some("k3s"));
    }
}
