//! Extended attributes survive `apply`'s replace of a configuration file and
//! `rollback`'s: a `user.*` attribute, a POSIX ACL (`setfacl`, stored as
//! `system.posix_acl_access`) and, where this machine lets the test set one,
//! an SELinux-style `security.selinux` label. Needs a file system with
//! `user.*` attributes under the temporary directory: without one the test
//! prints `SKIPPED <why>` and passes, except under CI (`CI=true`), where it
//! fails.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use support::copy_fixture;

const ISSUER: &str = "https://oidc.example.com/xattrs";
const MANIFEST: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";
const USER_ATTR: &str = "user.irsa-agent.test";
const ACL: &str = "system.posix_acl_access";
const LABEL: &str = "security.selinux";
const LABEL_VALUE: &[u8] = b"system_u:object_r:kubernetes_file_t:s0\0";

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skip outside CI, fail under it.
fn cannot(what: &str) {
    if under_ci() {
        panic!("{what} (CI=true: this test must run)");
    }
    println!("SKIPPED xattrs: {what}");
    eprintln!("SKIPPED xattrs: {what}");
}

fn get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::getxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

fn set(path: &Path, name: &str, value: &[u8]) -> Result<(), rustix::io::Errno> {
    rustix::fs::setxattr(path, name, value, rustix::fs::XattrFlags::empty())
}

/// The ACL `u::rw-,u:12345:r--,g::r--,m::r--,o::---` in the kernel's
/// `system.posix_acl_access` format (version 2; tag, permissions, id).
fn raw_acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX), // user::rw-
        (0x02, 4, 12345),          // user:12345:r--
        (0x04, 4, u32::MAX),       // group::r--
        (0x10, 4, u32::MAX),       // mask::r--
        (0x20, 0, u32::MAX),       // other::---
    ] {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

/// Give `file` the ACL: with setfacl (Debian's `acl`, installed by .ci/run),
/// or outside CI without it, as the raw attribute.
fn set_acl(file: &Path) {
    match Command::new("setfacl")
        .args(["-m", "u:12345:r,m::r,o::-"])
        .arg(file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "setfacl: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if under_ci() => panic!("setfacl (package acl) is needed under CI: {e}"),
        Err(_) => set(file, ACL, &raw_acl()).expect("setting the ACL attribute"),
    }
}

fn run(root: &Path, args: &[&str]) -> serde_json::Value {
    let (v, code) = support::json_run(root, args);
    assert_eq!(code, 0, "{args:?}: {v}");
    v
}

#[test]
fn extended_attributes_and_acls_survive_apply_and_rollback() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let manifest = root.join(MANIFEST);
    if let Err(e) = set(&manifest, USER_ATTR, b"kept") {
        return cannot(&format!(
            "the temporary directory's file system has no user.* extended attributes ({e})"
        ));
    }
    std::fs::set_permissions(&manifest, std::fs::Permissions::from_mode(0o600)).unwrap();
    set_acl(&manifest);
    let acl = get(&manifest, ACL).expect("the ACL is set");
    // A label as SELinux stores it, where this kernel lets root set one
    // without a policy saying no (no SELinux here): kept too.
    let label = set(&manifest, LABEL, LABEL_VALUE).is_ok();
    if !label {
        println!("(security.selinux cannot be set here: the label part is not checked)");
    }
    let mode = std::fs::metadata(&manifest).unwrap().mode() & 0o7777;
    let old_text = std::fs::read_to_string(&manifest).unwrap();
    let old_inode = std::fs::metadata(&manifest).unwrap().ino();

    let check = |what: &str| {
        assert_eq!(
            get(&manifest, USER_ATTR).as_deref(),
            Some(&b"kept"[..]),
            "{what}: the user.* attribute"
        );
        assert_eq!(
            get(&manifest, ACL).as_deref(),
            Some(&acl[..]),
            "{what}: the ACL"
        );
        if label {
            assert_eq!(
                get(&manifest, LABEL).as_deref(),
                Some(LABEL_VALUE),
                "{what}: the label"
            );
        }
        assert_eq!(
            std::fs::metadata(&manifest).unwrap().mode() & 0o7777,
            mode,
            "{what}: the mode (the ACL's mask in its group bits)"
        );
        if let Ok(out) = Command::new("getfacl").arg("-cp").arg(&manifest).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("user:12345:r--"), "{what}: getfacl: {text}");
        }
    };

    let v = run(root, &["apply", "--issuer", ISSUER, "--no-restart"]);
    assert_eq!(v["changed"], true, "{v}");
    let new_text = std::fs::read_to_string(&manifest).unwrap();
    assert!(new_text.contains(ISSUER));
    assert_ne!(
        std::fs::metadata(&manifest).unwrap().ino(),
        old_inode,
        "replaced by a new file, not rewritten in place"
    );
    check("after apply");

    run(root, &["rollback", "--no-restart"]);
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), old_text);
    check("after rollback");
}
