//! Checks of the admin kubeconfig before a client is built from it, so that
//! its problems are named in the user's terms (which file, which entry, what
//! to do) instead of as the TLS library's error once connecting fails: a file
//! it refers to that does not exist, a client certificate that cannot be read
//! or is X.509 v1 (rustls accepts only v3).

use anyhow::{anyhow, bail, Result};
use base64::Engine;
use kube::config::{AuthInfo, Cluster, Kubeconfig};
use x509_cert::certificate::Version;

use super::Sysroot;

/// Check the cluster and user of the current context of the kubeconfig at
/// node path `path` (every cluster and user when it names no context).
/// File references are node paths, relative ones relative to the kubeconfig.
pub fn check(root: &Sysroot, path: &str, kc: &Kubeconfig) -> Result<()> {
    let at = Place { root, path };
    let context = kc
        .current_context
        .as_ref()
        .and_then(|name| kc.contexts.iter().find(|c| &c.name == name))
        .and_then(|c| c.context.as_ref());
    for named in &kc.clusters {
        if context.is_none_or(|c| c.cluster == named.name) {
            if let Some(cluster) = &named.cluster {
                check_cluster(&at, &named.name, cluster)?;
            }
        }
    }
    for named in &kc.auth_infos {
        if context.is_none_or(|c| c.user.as_deref() == Some(named.name.as_str())) {
            if let Some(user) = &named.auth_info {
                check_user(&at, &named.name, user)?;
            }
        }
    }
    Ok(())
}

/// The kubeconfig and the root it is read under, for reading and messages.
struct Place<'a> {
    root: &'a Sysroot,
    path: &'a str,
}

impl Place<'_> {
    /// "the admin kubeconfig PATH (under --root DIR)".
    fn name(&self) -> String {
        if self.root.is_host() {
            format!("the admin kubeconfig {}", self.path)
        } else {
            format!(
                "the admin kubeconfig {} (under --root {})",
                self.path,
                self.root.display_root()
            )
        }
    }

    /// The node path of a file reference in the kubeconfig.
    fn node_path(&self, reference: &str) -> String {
        if reference.starts_with('/') {
            reference.to_string()
        } else {
            let dir = self.path.rsplit_once('/').map_or("/", |(d, _)| d);
            format!("{dir}/{reference}")
        }
    }

    /// The file a setting refers to; an error naming the setting when it is
    /// missing.
    fn read(&self, entry: &str, setting: &str, reference: &str) -> Result<Vec<u8>> {
        let node_path = self.node_path(reference);
        match self.root.read_bytes_optional(&node_path) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => bail!(
                "{}: {entry} sets {setting}: {node_path}, which does not exist; fix the path or \
                 embed the file as {setting}-data",
                self.name()
            ),
            Err(e) => Err(anyhow!(
                "{}: {entry} sets {setting}: {node_path}, which cannot be read: {e:#}",
                self.name()
            )),
        }
    }
}

fn check_cluster(at: &Place, name: &str, cluster: &Cluster) -> Result<()> {
    if let Some(ca) = &cluster.certificate_authority {
        at.read(&format!("cluster {name}"), "certificate-authority", ca)?;
    }
    Ok(())
}

fn check_user(at: &Place, name: &str, user: &AuthInfo) -> Result<()> {
    let entry = format!("user {name}");
    if let Some(key) = &user.client_key {
        at.read(&entry, "client-key", key)?;
    }
    if let Some(file) = &user.token_file {
        at.read(&entry, "tokenFile", file)?;
    }
    let (pem, setting) = if let Some(data) = &user.client_certificate_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| {
                anyhow!(
                    "{}: {entry}'s client-certificate-data is not base64: {e}",
                    at.name()
                )
            })?;
        (pem, "client-certificate-data".to_string())
    } else if let Some(file) = &user.client_certificate {
        let pem = at.read(&entry, "client-certificate", file)?;
        (pem, format!("client-certificate {}", at.node_path(file)))
    } else {
        return Ok(());
    };
    match certificate_version(&pem) {
        Some(Ok(Version::V3)) => Ok(()),
        Some(Ok(v)) => bail!(
            "{}: the client certificate of {entry} ({setting}) is X.509 {}, which the apiserver \
             client (rustls) refuses; put a v3 certificate there (one with extensions, e.g. \
             `openssl x509 -req ... -extfile` with extendedKeyUsage=clientAuth)",
            at.name(),
            match v {
                Version::V1 => "v1",
                Version::V2 => "v2",
                Version::V3 => "v3",
            }
        ),
        Some(Err(e)) => bail!(
            "{}: the client certificate of {entry} ({setting}) is not a valid certificate: {e}",
            at.name()
        ),
        None => bail!(
            "{}: {entry}'s {setting} holds no PEM CERTIFICATE block",
            at.name()
        ),
    }
}

/// The X.509 version of the first CERTIFICATE block of `pem`; None without one.
fn certificate_version(pem: &[u8]) -> Option<std::result::Result<Version, String>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let start = text.find(BEGIN)?;
    let end = text[start..].find(END)? + start + END.len();
    Some(
        der::pem::decode_vec(text[start..end].as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|(_, der)| {
                <x509_cert::Certificate as der::Decode>::from_der(&der).map_err(|e| e.to_string())
            })
            .map(|c| c.tbs_certificate.version),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kubeadm fixture's client certificate: X.509 v1.
    fn v1_kubeconfig() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kubeadm-default/etc/kubernetes/admin.conf"
        ))
        .unwrap()
    }

    fn check_text(root: &Sysroot, text: &str) -> Result<()> {
        let kc = Kubeconfig::from_yaml(text).unwrap();
        check(root, "/etc/kubernetes/admin.conf", &kc)
    }

    #[test]
    fn a_v1_client_certificate_is_named_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        let e = check_text(&root, &v1_kubeconfig()).unwrap_err().to_string();
        assert!(
            e.starts_with("the admin kubeconfig /etc/kubernetes/admin.conf (under --root "),
            "{e}"
        );
        assert!(
            e.contains("user kubernetes-admin (client-certificate-data) is X.509 v1"),
            "{e}"
        );
        assert!(e.contains("put a v3 certificate there"), "{e}");
        assert!(!e.contains("UnsupportedCertVersion"), "{e}");
    }

    #[test]
    fn a_v3_certificate_passes_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["admin".into()]).unwrap();
        std::fs::create_dir_all(dir.path().join("etc/kubernetes/pki")).unwrap();
        std::fs::write(
            dir.path().join("etc/kubernetes/pki/admin.crt"),
            cert.cert.pem(),
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/kubernetes/pki/admin.key"), "key").unwrap();
        let text = |ca: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
                 contexts:\n- name: c\n  context: {{cluster: k, user: u}}\n\
                 clusters:\n- name: k\n  cluster: {{server: 'https://127.0.0.1:6443', certificate-authority: {ca}}}\n\
                 users:\n- name: u\n  user: {{client-certificate: pki/admin.crt, client-key: /etc/kubernetes/pki/admin.key}}\n"
            )
        };
        std::fs::write(
            dir.path().join("etc/kubernetes/pki/ca.crt"),
            cert.cert.pem(),
        )
        .unwrap();
        check_text(&root, &text("pki/ca.crt")).unwrap();

        let e = check_text(&root, &text("/var/lib/minikube/certs/ca.crt"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "cluster k sets certificate-authority: /var/lib/minikube/certs/ca.crt, which does not exist"
            ),
            "{e}"
        );
        assert!(!e.contains("\"/"), "no doubly quoted path: {e}");
    }
}
