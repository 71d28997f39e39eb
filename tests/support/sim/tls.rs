//! The simulator's PKI and admin kubeconfig: a throwaway CA, a serving
//! certificate for `127.0.0.1`/`localhost`, and an admin credential (a client
//! certificate `CN=kubernetes-admin, O=system:masters`, or a bearer token for
//! MicroK8s, as each distribution's real admin kubeconfig has).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use der::Decode;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

/// How the admin kubeconfig authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAuth {
    ClientCert,
    Token,
}

/// Names used in a distribution's admin kubeconfig (cluster, context, user).
#[derive(Debug, Clone, Copy)]
pub struct KubeconfigNames {
    pub cluster: &'static str,
    pub context: &'static str,
    pub user: &'static str,
}

pub struct Pki {
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    admin_cert_der: CertificateDer<'static>,
    admin_key_der: Vec<u8>,
    /// The bearer token that means "admin" (MicroK8s-style kubeconfigs).
    pub admin_token: String,
}

impl Pki {
    pub fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate().context("generating the simulator CA key")?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = dn(&[(DnType::CommonName, "irsa-agent-simulator-ca")]);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        server_params.distinguished_name = dn(&[(DnType::CommonName, "kube-apiserver")]);
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin_params = CertificateParams::default();
        admin_params.distinguished_name = dn(&[
            (DnType::OrganizationName, "system:masters"),
            (DnType::CommonName, "kubernetes-admin"),
        ]);
        admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin_params.signed_by(&admin_key, &issuer)?;

        let mut token = [0u8; 24];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut token);
        let admin_token: String = token.iter().map(|b| format!("{b:02x}")).collect();

        Ok(Pki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_chain: vec![server_cert.der().clone()],
            server_key_der: server_key.serialize_der(),
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            admin_cert_der: admin_cert.der().clone(),
            admin_key_der: admin_key.serialize_der(),
            admin_token,
        })
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        Ok(Arc::new(roots))
    }

    /// The serving config: HTTP/1.1, client certificates optional (verified
    /// against the simulator CA when presented).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            Self::provider(),
        )
        .allow_unauthenticated()
        .build()?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                self.server_chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone())),
            )?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A client config trusting the simulator CA, with or without the admin
    /// client certificate.
    pub fn client_config(&self, with_admin_cert: bool) -> Result<Arc<rustls::ClientConfig>> {
        let builder = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?);
        let mut cfg = if with_admin_cert {
            builder.with_client_auth_cert(
                vec![self.admin_cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.admin_key_der.clone())),
            )?
        } else {
            builder.with_no_client_auth()
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A real kubeconfig for `server`, overwriting `path` (parent dirs created).
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        names: KubeconfigNames,
        auth: AdminAuth,
    ) -> Result<()> {
        let user = match auth {
            AdminAuth::ClientCert => json!({
                "client-certificate-data": STANDARD.encode(&self.admin_cert_pem),
                "client-key-data": STANDARD.encode(&self.admin_key_pem),
            }),
            AdminAuth::Token => json!({ "token": self.admin_token }),
        };
        let kc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": names.cluster,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": STANDARD.encode(&self.ca_pem),
                },
            }],
            "contexts": [{
                "name": names.context,
                "context": { "cluster": names.cluster, "user": names.user },
            }],
            "current-context": names.context,
            "preferences": {},
            "users": [{ "name": names.user, "user": user }],
        });
        let text = serde_norway::to_string(&kc)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

fn dn(items: &[(DnType, &str)]) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    for (t, v) in items {
        d.push(t.clone(), *v);
    }
    d
}

/// Common name and organizations of a (verified) client certificate, the way
/// kube-apiserver maps them to a user name and groups.
pub fn cert_identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let mut cn = None;
    let mut orgs = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let value = atv
                .value
                .decode_as::<der::asn1::Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_string())
                .or_else(|_| {
                    atv.value
                        .decode_as::<der::asn1::PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_string())
                })
                .ok()?;
            match atv.oid.to_string().as_str() {
                "2.5.4.3" => cn = Some(value),
                "2.5.4.10" => orgs.push(value),
                _ => {}
            }
        }
    }
    Some((cn?, orgs))
}
