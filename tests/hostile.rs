//! `apply` on a hostile filesystem: links in and out of the root (in a
//! directory on the way and as the file itself), read-only and immutable
//! files, a read-only mount, a full disk (RLIMIT_FSIZE always; a small tmpfs
//! when this machine lets the test mount one), foreign owners and a private
//! key with loose permissions. Each case either works as on a plain tree or is
//! refused with a message naming the file, and never leaves a byte changed,
//! a temporary file or a half-written backup behind.

mod support;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::prelude::*;
use serde_json::Value;
use support::{copy_fixture, fixture_path, json_of, node_files, snapshot, Tree};

const ISSUER: &str = "https://oidc.example.com/hostile";
const MANIFEST: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";

fn irsa(root: &Path) -> Command {
    let mut c = Command::cargo_bin("irsa-agent").unwrap();
    c.env_remove("IRSA_AGENT_LOG").arg("--root").arg(root);
    c
}

fn parse(out: &std::process::Output) -> (Value, i32) {
    (json_of(out), out.status.code().expect("exited, not killed"))
}

fn json_run(root: &Path, args: &[&str]) -> (Value, i32) {
    parse(
        &irsa(root)
            .args(["--output", "json"])
            .args(args)
            .output()
            .unwrap(),
    )
}

fn apply_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut a = vec!["apply", "--issuer", ISSUER, "--no-restart"];
    a.extend_from_slice(extra);
    a
}

/// Paths that differ between two snapshots.
fn differ(a: &Tree, b: &Tree) -> Vec<PathBuf> {
    let mut d: Vec<PathBuf> = a
        .keys()
        .chain(b.keys())
        .filter(|p| a.get(*p) != b.get(*p))
        .cloned()
        .collect();
    d.dedup();
    d
}

/// Temporary files of irsa-agent anywhere under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".irsa-agent-"))
        })
        .collect()
}

/// The backup directories under the root.
fn backups(root: &Path) -> Vec<PathBuf> {
    match fs::read_dir(root.join("var/lib/irsa-agent/backups")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A failed run left the node as it was: every file byte-identical with the
/// same mode, no temporary file, no backup (not even half of one).
fn assert_intact(root: &Path, before: &Tree, what: &str) {
    let d = differ(&node_files(root), before);
    assert!(d.is_empty(), "{what}: these changed: {d:?}");
    assert_eq!(
        temp_files(root),
        Vec::<PathBuf>::new(),
        "{what}: temp files"
    );
    assert_eq!(backups(root), Vec::<PathBuf>::new(), "{what}: backups left");
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn skip(test: &str, why: impl std::fmt::Display) {
    println!("SKIPPED {test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
}

/// Copy a fixture's subtree `from` (relative) to `to` (a host path).
fn copy_subtree(case: &str, from: &str, to: &Path) {
    let src = copy_fixture(case);
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(src.path().join(from))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// `outside` as a path under `root` (how a link to it resolves under --root).
fn re_rooted(root: &Path, outside: &Path) -> PathBuf {
    root.join(outside.strip_prefix("/").unwrap())
}

// ---------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------

#[test]
fn a_linked_directory_inside_the_root_is_followed_and_stays_a_link() {
    // On a real MicroK8s node /var/snap/microk8s/current is a link to the
    // revision directory; with either spelling of the link, apply edits the
    // files in the revision directory and leaves the link alone.
    for target in ["1234", "/var/snap/microk8s/1234"] {
        let dir = copy_fixture("microk8s-default");
        let root = dir.path();
        let snap = root.join("var/snap/microk8s");
        fs::rename(snap.join("current"), snap.join("1234")).unwrap();
        symlink(target, snap.join("current")).unwrap();
        let host_twin = Path::new("/var/snap/microk8s/1234");
        let host_had_it = host_twin.exists();
        let before = node_files(root);

        let (v, code) = json_run(root, &apply_args(&["--generate-key"]));
        assert_eq!(code, 0, "{target}: {v}");
        assert_eq!(v["changed"], true);
        let after = node_files(root);
        let changed = differ(&before, &after);
        assert!(
            changed.contains(&PathBuf::from("var/snap/microk8s/1234/args/kube-apiserver")),
            "{target}: {changed:?}"
        );
        assert!(
            changed
                .iter()
                .all(|p| p.starts_with("var/snap/microk8s/1234")),
            "{target}: only the revision directory changes: {changed:?}"
        );
        assert_eq!(
            fs::read_link(snap.join("current")).unwrap(),
            PathBuf::from(target),
            "the link is kept"
        );
        let key = v["signing_key_file"].as_str().unwrap();
        assert!(
            key.starts_with("/var/snap/microk8s/current/certs/irsa-agent-"),
            "{key}"
        );
        let installed = snap
            .join("1234/certs")
            .join(Path::new(key).file_name().unwrap());
        assert_eq!(mode(&installed), 0o600, "{target}");
        if !host_had_it {
            assert!(!host_twin.exists(), "{target}: wrote outside the root");
        }
        // Idempotent through the link too.
        let (v, code) = json_run(root, &apply_args(&["--generate-key"]));
        assert_eq!((code, &v["changed"]), (0, &Value::Bool(false)), "{v}");
    }
}

#[test]
fn a_directory_link_pointing_outside_the_root_is_resolved_under_the_root() {
    // etc/kubernetes in the root is a link to a host directory outside it,
    // absolute or with enough `..` to climb out. The node would see that path
    // under its own root: irsa-agent reads and writes there, and the host
    // directory outside the root is never touched.
    let outside = tempfile::tempdir().unwrap();
    let host_dir = outside.path().join("kubernetes");
    copy_subtree("kubeadm-default", "etc/kubernetes", &host_dir);
    // Tell the two copies apart: the outside one names another issuer.
    let outside_manifest = host_dir.join("manifests/kube-apiserver.yaml");
    let text = fs::read_to_string(&outside_manifest).unwrap();
    fs::write(
        &outside_manifest,
        text.replace(
            "https://kubernetes.default.svc.cluster.local",
            "https://outside.example.com",
        ),
    )
    .unwrap();
    assert!(fs::read_to_string(&outside_manifest)
        .unwrap()
        .contains("outside.example.com"));
    let outside_before = snapshot(outside.path());

    let ups = "../".repeat(host_dir.components().count() + 3);
    for link in [
        host_dir.display().to_string(),
        format!("{}{}", ups.trim_end_matches('/'), host_dir.display()),
    ] {
        let dir = copy_fixture("kubeadm-default");
        let root = dir.path();
        fs::remove_dir_all(root.join("etc/kubernetes")).unwrap();
        symlink(&link, root.join("etc/kubernetes")).unwrap();
        // Nothing under the root at the re-rooted path: no distribution found.
        let (v, code) = json_run(root, &apply_args(&[]));
        assert_eq!(code, 1, "{link}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("no Kubernetes distribution detected"),
            "{link}: {v}"
        );
        // With the node's own copy there, that is the one read and written.
        let twin = re_rooted(root, &host_dir);
        copy_subtree("kubeadm-default", "etc/kubernetes", &twin);
        let (v, code) = json_run(root, &["detect"]);
        assert_eq!(code, 0, "{v}");
        assert_eq!(
            v["issuers"][0]["value"], "https://kubernetes.default.svc.cluster.local",
            "{link}: detect read the copy under the root: {v}"
        );
        let (v, code) = json_run(root, &apply_args(&["--generate-key"]));
        assert_eq!(code, 0, "{link}: {v}");
        assert!(
            fs::read_to_string(twin.join("manifests/kube-apiserver.yaml"))
                .unwrap()
                .contains(ISSUER)
        );
        let key = Path::new(v["signing_key_file"].as_str().unwrap());
        assert!(twin.join("pki").join(key.file_name().unwrap()).is_file());
        assert!(
            fs::read_link(root.join("etc/kubernetes")).is_ok(),
            "the link is kept"
        );
        let d = differ(&snapshot(outside.path()), &outside_before);
        assert!(d.is_empty(), "{link}: outside the root changed: {d:?}");
    }
}

#[test]
fn a_key_directory_link_to_nothing_is_refused_and_one_to_outside_is_re_rooted() {
    let outside = tempfile::tempdir().unwrap();
    let host_pki = outside.path().join("pki");
    copy_subtree("kubeadm-default", "etc/kubernetes/pki", &host_pki);
    let outside_before = snapshot(outside.path());

    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let pki = root.join("etc/kubernetes/pki");
    let twin = re_rooted(root, &host_pki);
    // Keep the node's own keys where the link leads under the root...
    fs::create_dir_all(twin.parent().unwrap()).unwrap();
    fs::rename(&pki, &twin).unwrap();
    symlink(&host_pki, &pki).unwrap();
    let (v, code) = json_run(root, &apply_args(&["--generate-key"]));
    assert_eq!(code, 0, "{v}");
    let key = Path::new(v["signing_key_file"].as_str().unwrap());
    assert!(key.starts_with("/etc/kubernetes/pki"), "{key:?}");
    assert_eq!(mode(&twin.join(key.file_name().unwrap())), 0o600);
    assert!(differ(&snapshot(outside.path()), &outside_before).is_empty());

    // ...and without them there, the link leads nowhere: refused before
    // anything is written (not followed into a directory irsa-agent creates).
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let pki = root.join("etc/kubernetes/pki");
    fs::remove_dir_all(&pki).unwrap();
    symlink(&host_pki, &pki).unwrap();
    let before = node_files(root);
    for args in [
        apply_args(&["--generate-key"]),
        apply_args(&["--generate-key", "--check"]),
    ] {
        let (v, code) = json_run(root, &args);
        assert_eq!(code, 1, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(&format!(
                "/etc/kubernetes/pki is a symbolic link to {}, which is not an existing directory",
                host_pki.display()
            )),
            "{msg}"
        );
        assert_intact(root, &before, "a key dir linked to nothing");
    }
    assert!(
        !re_rooted(root, &host_pki).exists(),
        "nothing created at the link's target"
    );
    assert!(differ(&snapshot(outside.path()), &outside_before).is_empty());
}

#[test]
fn a_config_file_that_is_a_link_is_read_but_never_written_through() {
    let outside = tempfile::tempdir().unwrap();
    let outside_file = outside.path().join("kube-apiserver.yaml");
    fs::copy(
        fixture_path("kubeadm-default").join(MANIFEST),
        &outside_file,
    )
    .unwrap();
    let outside_before = snapshot(outside.path());
    for (case, target) in [
        (
            "inside the root",
            PathBuf::from("/etc/kubernetes/kube-apiserver.real.yaml"),
        ),
        ("outside the root", outside_file.clone()),
    ] {
        let dir = copy_fixture("kubeadm-default");
        let root = dir.path();
        let real = re_rooted(root, &target);
        fs::create_dir_all(real.parent().unwrap()).unwrap();
        fs::rename(root.join(MANIFEST), &real).unwrap();
        symlink(&target, root.join(MANIFEST)).unwrap();
        // detect reads through the link, under the root.
        let (v, code) = json_run(root, &["detect"]);
        assert_eq!(code, 0, "{case}: {v}");
        assert_eq!(v["distro"], "kubeadm");
        let before_all = snapshot(root);
        for args in [
            apply_args(&[]),
            apply_args(&["--check"]),
            apply_args(&["--generate-key"]),
        ] {
            let (v, code) = json_run(root, &args);
            assert_eq!(code, 1, "{case}: {v}");
            let msg = v["error"].as_str().unwrap();
            assert!(
                msg.contains(&format!(
                    "/{MANIFEST} is a symbolic link to {}; irsa-agent does not write through links",
                    target.display()
                )),
                "{case}: {msg}"
            );
            assert_eq!(
                snapshot(root),
                before_all,
                "{case}: {args:?} changed the tree"
            );
        }
        // The human form says the same on stderr.
        let out = irsa(root).args(apply_args(&[])).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("is a symbolic link to"));
        assert!(
            differ(&snapshot(outside.path()), &outside_before).is_empty(),
            "{case}"
        );
    }
}

#[test]
fn a_link_loop_is_an_error_naming_the_path() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let pki = root.join("etc/kubernetes/pki");
    fs::remove_dir_all(&pki).unwrap();
    symlink("/etc/kubernetes/pki", &pki).unwrap();
    let before = node_files(root);
    let (v, code) = json_run(root, &apply_args(&[]));
    assert_eq!(code, 1, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("/etc/kubernetes/pki/sa.key: too many levels of symbolic links"),
        "{msg}"
    );
    assert_intact(root, &before, "link loop");
}

/// A thread swaps the manifests directory with a link to a directory outside
/// the root, back and forth (renameat2 RENAME_EXCHANGE, bounded in count and
/// time), while `apply` runs again and again. A path checked in one state and
/// used in the other would write outside the root; node paths are resolved
/// inside the root by the kernel, once per access, so the host directory is
/// never written, whatever each run's outcome.
#[test]
fn a_directory_swapped_for_a_link_between_check_and_use_never_leads_outside() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let outside = tempfile::tempdir().unwrap();
    let host_dir = outside.path().join("manifests");
    copy_subtree("kubeadm-default", "etc/kubernetes/manifests", &host_dir);
    let outside_before = snapshot(outside.path());
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    // Where the link leads under the root holds a manifest too, so every run
    // reads one whichever way the swap is, and goes on to write.
    copy_subtree(
        "kubeadm-default",
        "etc/kubernetes/manifests",
        &re_rooted(root, &host_dir),
    );
    let manifests = root.join("etc/kubernetes/manifests");
    let swapped = root.join("etc/kubernetes/manifests.swap");
    symlink(&host_dir, &swapped).unwrap();

    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let mut outcomes = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed)
                && swaps.load(Ordering::Relaxed) < 10_000_000
                && start.elapsed() < Duration::from_secs(60)
            {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &manifests,
                    rustix::fs::CWD,
                    &swapped,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        });
        let start = Instant::now();
        for i in 0..40 {
            if start.elapsed() > Duration::from_secs(40) {
                break;
            }
            // Another issuer each run: every run has a manifest to write.
            let issuer = format!("{ISSUER}/{i}");
            let (v, code) = json_run(root, &["apply", "--issuer", &issuer, "--no-restart"]);
            let d = differ(&snapshot(outside.path()), &outside_before);
            if !d.is_empty() {
                stop.store(true, Ordering::Relaxed);
                panic!("run {i} wrote outside the root: {d:?}; its output: {v}");
            }
            outcomes.push(if code == 0 {
                "ok".to_string()
            } else {
                v["error"].as_str().unwrap_or("?").to_string()
            });
        }
        stop.store(true, Ordering::Relaxed);
    });
    println!(
        "{} swaps; outcomes: {outcomes:#?}",
        swaps.load(Ordering::Relaxed)
    );
    assert!(swaps.load(Ordering::Relaxed) > 100, "the race ran");
    assert!(
        outcomes.iter().any(|o| o == "ok"),
        "some runs wrote their manifest (inside the root): {outcomes:#?}"
    );
    assert!(differ(&snapshot(outside.path()), &outside_before).is_empty());
    assert_eq!(temp_files(outside.path()), Vec::<PathBuf>::new());
}

// ---------------------------------------------------------------------------
// Read-only, immutable, read-only mount
// ---------------------------------------------------------------------------

#[test]
fn a_read_only_mode_does_not_stop_root_and_is_kept() {
    // 0444 does not stop root (nor the rename, which needs only the
    // directory): the file is replaced and keeps 0444, like the other modes.
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let manifest = root.join(MANIFEST);
    fs::set_permissions(&manifest, fs::Permissions::from_mode(0o444)).unwrap();
    let (v, code) = json_run(root, &apply_args(&[]));
    assert_eq!(code, 0, "{v}");
    assert!(fs::read_to_string(&manifest).unwrap().contains(ISSUER));
    assert_eq!(mode(&manifest), 0o444);
}

/// `chattr` on a path, undone on drop (a temp dir with an immutable file in
/// it cannot be removed).
struct Attr(PathBuf, &'static str);

impl Attr {
    fn set(path: &Path, flag: &'static str) -> Result<Attr, String> {
        let out = Command::new("chattr")
            .arg(format!("+{flag}"))
            .arg(path)
            .output()
            .map_err(|e| format!("chattr: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Attr(path.to_path_buf(), flag))
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg(format!("-{}", self.1))
            .arg(&self.0)
            .status();
    }
}

#[test]
fn an_immutable_config_file_is_refused_before_anything_is_written() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let before = node_files(root);
    let _attr = match Attr::set(&root.join(MANIFEST), "i") {
        Ok(a) => a,
        Err(e) => {
            return skip(
                "immutable file",
                format!("chattr +i is not possible here: {e}"),
            )
        }
    };
    for extra in [&[][..], &["--generate-key"], &["--check"]] {
        let (v, code) = json_run(root, &apply_args(extra));
        assert_eq!(code, 1, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(&format!(
                "/{MANIFEST} cannot be replaced: Operation not permitted"
            )) && msg.contains("immutable"),
            "{msg}"
        );
        assert_intact(root, &before, "immutable manifest");
    }
}

#[test]
fn an_append_only_config_file_is_refused_before_anything_is_written() {
    // The append-only attribute lets access(W_OK) through, but not the
    // rename over the file: the check opens the file for writing (without
    // truncating it), which fails the same way, so nothing is written.
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let before = node_files(root);
    let _attr = match Attr::set(&root.join(MANIFEST), "a") {
        Ok(a) => a,
        Err(e) => {
            return skip(
                "append-only file",
                format!("chattr +a is not possible here: {e}"),
            )
        }
    };
    for extra in [
        &["--generate-key", "--key-type", "ec-p256"][..],
        &["--check"],
    ] {
        let (v, code) = json_run(root, &apply_args(extra));
        assert_eq!(code, 1, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(&format!(
                "/{MANIFEST} cannot be replaced: Operation not permitted"
            )) && msg.contains("append-only"),
            "{msg}"
        );
        assert_intact(root, &before, "append-only manifest");
    }
}

/// Root with another real uid (a set-uid start, `sudo` variants, `setpriv
/// --ruid`): access(2) checks the real uid and would call a root-owned 0644
/// manifest unwritable; the check uses the effective uid, as the write does.
#[test]
fn the_writability_check_uses_the_effective_uid() {
    if !is_root() {
        return skip("effective uid", "needs root");
    }
    let probe = Command::new("setpriv")
        .args(["--ruid", "65534", "--", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return skip(
            "effective uid",
            "setpriv (util-linux) cannot set the real uid here",
        );
    }
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    fs::set_permissions(root.join(MANIFEST), fs::Permissions::from_mode(0o644)).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("irsa-agent");
    let out = Command::new("setpriv")
        .args(["--ruid", "65534", "--"])
        .arg(&bin)
        .args(["--output", "json", "--root"])
        .arg(root)
        .args(apply_args(&[]))
        .env_remove("IRSA_AGENT_LOG")
        .output()
        .unwrap();
    let (v, code) = parse(&out);
    assert_eq!(code, 0, "{v}");
    assert!(fs::read_to_string(root.join(MANIFEST))
        .unwrap()
        .contains(ISSUER));
    assert_eq!(mode(&root.join(MANIFEST)), 0o644);
}

/// A mount made by the test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str], at: &Path) -> Result<(), String> {
        let out = Command::new("mount")
            .args(args)
            .arg(at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(())
    }

    fn read_only_bind(dir: &Path) -> Result<Mount, String> {
        Mount::run(&["--bind", dir.to_str().unwrap()], dir)?;
        let m = Mount(dir.to_path_buf());
        Mount::run(&["-o", "remount,bind,ro"], dir)?;
        Ok(m)
    }

    fn tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
        Mount::run(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ],
            at,
        )?;
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_mount_is_refused_before_anything_is_written() {
    if !is_root() {
        return skip("read-only mount", "mounting needs root");
    }
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let before = node_files(root);
    let manifests = root.join("etc/kubernetes/manifests");
    let _m = match Mount::read_only_bind(&manifests) {
        Ok(m) => m,
        Err(e) => {
            return skip(
                "read-only mount",
                format!("this sandbox does not allow it: {e}"),
            )
        }
    };
    let (v, code) = json_run(root, &apply_args(&["--generate-key"]));
    assert_eq!(code, 1, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "/{MANIFEST} cannot be replaced: Read-only file system (a read-only mount)"
        )),
        "{msg}"
    );
    assert_intact(root, &before, "read-only mount");
}

// ---------------------------------------------------------------------------
// Full disk
// ---------------------------------------------------------------------------

/// Run the binary with RLIMIT_FSIZE = `limit` bytes and SIGXFSZ ignored (so
/// a write past the limit fails with EFBIG, as on a full disk, instead of
/// killing the process): `trap '' XFSZ` is inherited through exec, prlimit(1)
/// sets the limit.
fn run_with_file_size_limit(root: &Path, limit: u64, args: &[&str]) -> (Value, i32) {
    let bin = assert_cmd::cargo::cargo_bin("irsa-agent");
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; limit=$1; shift; exec prlimit --fsize=\"$limit\" -- \"$@\"")
        .arg("sh")
        .arg(limit.to_string())
        .arg(&bin)
        .args(["--output", "json", "--root"])
        .arg(root)
        .args(args)
        .env_remove("IRSA_AGENT_LOG")
        .output()
        .unwrap();
    parse(&out)
}

#[test]
fn a_write_that_fails_for_lack_of_space_changes_nothing() {
    let args = apply_args(&["--generate-key", "--key-type", "ec-p256"]);
    // The sizes involved, measured: the manifest before and after.
    let old_len = fs::metadata(fixture_path("kubeadm-default").join(MANIFEST))
        .unwrap()
        .len();
    let probe = copy_fixture("kubeadm-default");
    let (v, code) = json_run(probe.path(), &args);
    assert_eq!(code, 0, "{v}");
    let new_len = fs::metadata(probe.path().join(MANIFEST)).unwrap().len();
    assert!(new_len > old_len);

    // Is `sh` able to run prlimit here?
    let check = Command::new("sh")
        .args(["-c", "trap '' XFSZ; prlimit --fsize=10 -- true"])
        .status();
    if !check.is_ok_and(|s| s.success()) {
        panic!("prlimit(1) (util-linux) is needed for this test");
    }

    for (limit, want) in [
        // (below the size of the lock file's pid, the lock fails first)
        (64, "backup"),
        (old_len / 2, "backup"),
        (old_len - 1, "backup"),
        (old_len, "write"),
        ((old_len + new_len) / 2, "write"),
        (new_len - 1, "write"),
        (new_len, "ok"),
    ] {
        let dir = copy_fixture("kubeadm-default");
        let root = dir.path();
        let before = node_files(root);
        let (v, code) = run_with_file_size_limit(root, limit, &args);
        let what = format!("file size limit {limit} (manifest {old_len} -> {new_len} bytes)");
        if want == "ok" {
            assert_eq!(code, 0, "{what}: {v}");
            assert_eq!(backups(root).len(), 1, "{what}");
            assert_eq!(temp_files(root), Vec::<PathBuf>::new(), "{what}");
            continue;
        }
        assert_eq!(code, 1, "{what}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("File too large"), "{what}: {msg}");
        match want {
            "backup" => assert!(
                msg.starts_with("backing up the files to change; nothing was written")
                    && msg.contains(&format!("backing up /{MANIFEST}")),
                "{what}: {msg}"
            ),
            _ => assert!(
                msg.starts_with("writing failed; every file was restored from backup")
                    && msg.contains(&format!("writing /{MANIFEST}")),
                "{what}: {msg}"
            ),
        }
        assert_intact(root, &before, &what);
    }
}

#[test]
fn a_full_tmpfs_at_any_point_leaves_the_node_as_it_was() {
    if !is_root() {
        return skip("full tmpfs", "mounting needs root");
    }
    let mnt = tempfile::tempdir().unwrap();
    let _m = match Mount::tmpfs(mnt.path(), "2m") {
        Ok(m) => m,
        Err(e) => {
            return skip(
                "full tmpfs",
                format!("this sandbox does not allow mounting: {e}"),
            )
        }
    };
    let args = apply_args(&["--generate-key", "--key-type", "ec-p256"]);
    let root = mnt.path().join("root");
    let filler = mnt.path().join("filler");
    let mut outcomes = Vec::new();
    for free_pages in 0..12u64 {
        let _ = fs::remove_dir_all(&root);
        let _ = fs::remove_file(&filler);
        copy_subtree("kubeadm-default", "", &root);
        // Fill the file system, then free `free_pages` pages.
        let mut f = fs::File::create(&filler).unwrap();
        let page = vec![0u8; 4096];
        let mut len = 0u64;
        loop {
            match std::io::Write::write(&mut f, &page) {
                Ok(n) if n > 0 => len += n as u64,
                _ => break,
            }
        }
        assert!(len > 0, "the filler wrote something");
        f.set_len(len.saturating_sub(free_pages * 4096)).unwrap();
        drop(f);
        let before = node_files(&root);
        let (v, code) = json_run(&root, &args);
        let what = format!("{free_pages} free pages");
        if code == 0 {
            outcomes.push("ok".to_string());
            assert!(
                fs::read_to_string(root.join(MANIFEST))
                    .unwrap()
                    .contains(ISSUER),
                "{what}"
            );
            assert_eq!(temp_files(&root), Vec::<PathBuf>::new(), "{what}");
            continue;
        }
        assert_eq!(code, 1, "{what}: {v}");
        let msg = v["error"].as_str().unwrap().to_string();
        assert!(msg.contains("No space left on device"), "{what}: {msg}");
        assert_intact(&root, &before, &what);
        outcomes.push(msg);
    }
    println!("outcomes by free pages: {outcomes:#?}");
    assert!(
        outcomes.iter().any(|o| o == "ok"),
        "enough room works: {outcomes:#?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.starts_with("writing failed; every file was restored")),
        "some run failed after writing keys and was undone: {outcomes:#?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.starts_with("backing up the files to change")),
        "some run failed while backing up: {outcomes:#?}"
    );
}

// ---------------------------------------------------------------------------
// Owners and modes
// ---------------------------------------------------------------------------

#[test]
fn a_foreign_owner_is_kept_and_warned_about() {
    if !is_root() {
        return skip("foreign owner", "chown needs root");
    }
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let manifest = root.join(MANIFEST);
    let pki = root.join("etc/kubernetes/pki");
    std::os::unix::fs::chown(&manifest, Some(1234), Some(1234)).unwrap();
    fs::set_permissions(&manifest, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&pki, Some(1234), Some(2345)).unwrap();
    let manifests = root.join("etc/kubernetes/manifests");
    fs::set_permissions(&manifests, fs::Permissions::from_mode(0o777)).unwrap();

    let (v, code) = json_run(root, &["detect"]);
    assert_eq!(code, 0, "{v}");
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains(&format!(
            "configuration file /{MANIFEST} is owned by uid 1234"
        )),
        "{warnings}"
    );
    assert!(
        warnings.contains("key directory /etc/kubernetes/pki is owned by uid 1234"),
        "{warnings}"
    );
    assert!(
        warnings.contains("configuration directory /etc/kubernetes/manifests has mode 0777"),
        "{warnings}"
    );

    let (v, code) = json_run(root, &apply_args(&["--generate-key"]));
    assert_eq!(code, 0, "{v}");
    assert!(
        v["warnings"].to_string().contains("is owned by uid 1234"),
        "{v}"
    );
    let m = fs::metadata(&manifest).unwrap();
    assert!(fs::read_to_string(&manifest).unwrap().contains(ISSUER));
    assert_eq!(
        (m.uid(), m.gid(), mode(&manifest)),
        (1234, 1234, 0o640),
        "owner and mode kept"
    );
    let m = fs::metadata(&pki).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (1234, 2345),
        "the key dir is left alone"
    );
    // New keys belong to root, whoever owns the directory.
    let key = root.join(
        v["signing_key_file"]
            .as_str()
            .unwrap()
            .trim_start_matches('/'),
    );
    let m = fs::metadata(&key).unwrap();
    assert_eq!((m.uid(), mode(&key)), (0, 0o600));

    // The backup records the owner, holds a root-only copy, and a rollback
    // gives the file back its owner.
    let b = &backups(root)[0];
    let index: Value = serde_json::from_slice(&fs::read(b.join("index.json")).unwrap()).unwrap();
    let entry = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == format!("/{MANIFEST}").as_str())
        .unwrap();
    assert_eq!(entry["perms"]["uid"], 1234, "{index}");
    let copy = b.join("files").join(MANIFEST);
    assert_eq!(
        (fs::metadata(&copy).unwrap().uid(), mode(&copy)),
        (0, 0o600)
    );
    let (v, code) = json_run(root, &["rollback", "--no-restart"]);
    assert_eq!(code, 0, "{v}");
    let m = fs::metadata(&manifest).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), mode(&manifest)),
        (1234, 1234, 0o640),
        "restored with its owner"
    );
    assert!(!fs::read_to_string(&manifest).unwrap().contains(ISSUER));
}

#[test]
fn a_loose_private_key_is_warned_about_and_left_as_it_is() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let sa_key = root.join("etc/kubernetes/pki/sa.key");
    let warning = "signing key /etc/kubernetes/pki/sa.key has mode 0644";
    fs::set_permissions(&sa_key, fs::Permissions::from_mode(0o644)).unwrap();
    let (v, code) = json_run(root, &["detect"]);
    assert_eq!(code, 0, "{v}");
    assert!(v["warnings"].to_string().contains(warning), "{v}");
    assert!(
        v["warnings"]
            .to_string()
            .contains("chmod 600 /etc/kubernetes/pki/sa.key"),
        "{v}"
    );
    let out = irsa(root).args(apply_args(&[])).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(warning),
        "warned on stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&sa_key), 0o644, "warned, not fixed");

    // A 0600 key gets no such warning; a world-writable public key does.
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    fs::set_permissions(
        root.join("etc/kubernetes/pki/sa.key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(
        root.join("etc/kubernetes/pki/sa.pub"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let (v, _) = json_run(root, &["detect"]);
    let w = v["warnings"].to_string();
    assert!(!w.contains("signing key"), "{w}");
    assert!(
        w.contains("key file /etc/kubernetes/pki/sa.pub has mode 0666"),
        "{w}"
    );
}

// ---------------------------------------------------------------------------
// Key files are 0600 from their creation
// ---------------------------------------------------------------------------

/// Run under `umask 000`: a file created with the default 0666 would be
/// world-readable, so only a file created 0600 comes out 0600.
fn with_umask_000(cmd: &mut Command) -> std::process::Output {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(cmd.get_program());
    sh.args(cmd.get_args());
    sh.env_remove("IRSA_AGENT_LOG");
    sh.output().unwrap()
}

#[test]
fn private_keys_and_their_backups_are_never_looser_than_0600_even_under_umask_000() {
    let tmp = tempfile::tempdir().unwrap();
    let (k, p) = (tmp.path().join("sa.key"), tmp.path().join("sa.pub"));
    let out = with_umask_000(
        Command::cargo_bin("irsa-agent")
            .unwrap()
            .args(["keygen", "--type", "ec-p256", "--private-key"])
            .arg(&k)
            .arg("--public-key")
            .arg(&p),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&k), 0o600);
    assert_eq!(mode(&p), 0o644);

    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let out =
        with_umask_000(irsa(root).args(apply_args(&["--generate-key", "--key-type", "ec-p256"])));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = snapshot(root);
    let keys: Vec<_> = after
        .keys()
        .filter(|p| p.starts_with("etc/kubernetes/pki") && p.to_string_lossy().ends_with(".key"))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("irsa-agent-")
        })
        .cloned()
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(mode(&root.join(&keys[0])), 0o600);

    // The rollback saves what it removes (the new private key) in a backup
    // of its own: 0600, in directories only root can enter.
    let out = with_umask_000(irsa(root).args(["--output", "json", "rollback", "--no-restart"]));
    let (v, code) = parse(&out);
    assert_eq!(code, 0, "{v}");
    let saved = root
        .join("var/lib/irsa-agent/backups")
        .join(v["saved"].as_str().unwrap());
    let copy = saved.join("files").join(&keys[0]);
    assert!(copy.is_file(), "the rollback saved the key it removed");
    assert_eq!(mode(&copy), 0o600);
    let mut d = copy.parent().unwrap();
    while d.starts_with(root.join("var/lib/irsa-agent/backups")) {
        assert_eq!(mode(d), 0o700, "{}", d.display());
        d = d.parent().unwrap();
    }
    for (p, (_, m)) in snapshot(&root.join("var/lib/irsa-agent/backups")) {
        assert_eq!(
            m & 0o077,
            0,
            "backup entry {} is {:o}",
            p.display(),
            m & 0o7777
        );
    }
}

/// With strace (when it can trace here): every file the run creates in the
/// key directory is opened with O_CREAT|O_EXCL and mode 0600, and the one
/// that becomes the private key is never given another mode.
#[test]
fn strace_shows_the_private_key_created_0600_and_never_chmodded_looser() {
    let probe = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        return skip(
            "strace",
            "strace is missing or cannot trace in this sandbox",
        );
    }
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let log = tempfile::NamedTempFile::new().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("irsa-agent");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=openat,open,creat,fchmod,chmod,fchmodat,rename,renameat,renameat2,link,linkat",
            "-o",
        ])
        .arg(log.path())
        .arg(&bin)
        .arg("--root")
        .arg(root)
        .args(apply_args(&["--generate-key", "--key-type", "ec-p256"]))
        .env_remove("IRSA_AGENT_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = fs::read_to_string(log.path()).unwrap();
    let pki = root.join("etc/kubernetes/pki").display().to_string();

    // The temporary file that became the private key.
    let key_rename = trace
        .lines()
        .find(|l| {
            (l.contains("rename") || l.contains("link(") || l.contains("linkat("))
                && l.contains(&pki)
                && l.contains(".key\"")
        })
        .unwrap_or_else(|| panic!("no rename/link to the key in:\n{trace}"));
    let temp = key_rename
        .split('"')
        .find(|s| s.contains(".irsa-agent-"))
        .unwrap_or_else(|| panic!("no temporary file in {key_rename}"))
        .to_string();
    let temp_name = Path::new(&temp)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let mentions: Vec<&str> = trace.lines().filter(|l| l.contains(&temp_name)).collect();
    let create = mentions
        .iter()
        .find(|l| l.contains("open") && l.contains("O_CREAT"))
        .unwrap_or_else(|| panic!("the temp file's creation is not in the trace: {mentions:#?}"));
    assert!(
        create.contains("O_EXCL") && create.contains(", 0600)"),
        "{create}"
    );
    for l in mentions.iter().filter(|l| l.contains("chmod")) {
        let m = l
            .rsplit(", ")
            .next()
            .and_then(|t| t.split(')').next())
            .and_then(|t| u32::from_str_radix(t.trim_start_matches('0'), 8).ok())
            .unwrap_or_else(|| panic!("mode in {l}"));
        assert_eq!(
            m & 0o077,
            0,
            "the private key's file was given mode {m:o}: {l}"
        );
    }
}
