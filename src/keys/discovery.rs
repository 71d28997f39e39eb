//! The OpenID discovery document and the set of files to publish under an
//! issuer (pure: paths relative to the output directory, URLs, contents).

use serde::Serialize;

use super::jwk::{jwks, to_pretty_json};
use super::PublicKey;
use crate::cli::JwksLayout;
use crate::issuer::Issuer;

pub const DISCOVERY_PATH: &str = ".well-known/openid-configuration";
pub const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// `/.well-known/openid-configuration`, keys in the apiserver's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryDocument {
    pub issuer: String,
    pub jwks_uri: String,
    pub response_types_supported: Vec<&'static str>,
    pub subject_types_supported: Vec<&'static str>,
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
}

/// Where the JWKS lives, relative to the issuer and to the output directory.
pub fn jwks_path(layout: JwksLayout) -> &'static str {
    match layout {
        JwksLayout::Kube => "openid/v1/jwks",
        JwksLayout::KeysJson => "keys.json",
    }
}

/// `<issuer without trailing slash>/<rel>`.
pub fn url_under(issuer: &Issuer, rel: &str) -> String {
    format!("{}/{rel}", issuer.base())
}

pub fn discovery_document(
    issuer: &Issuer,
    layout: JwksLayout,
    keys: &[PublicKey],
) -> DiscoveryDocument {
    let mut algs: Vec<&'static str> = keys.iter().map(PublicKey::alg).collect();
    algs.sort_unstable();
    algs.dedup();
    DiscoveryDocument {
        issuer: issuer.as_str().to_string(),
        jwks_uri: url_under(issuer, jwks_path(layout)),
        response_types_supported: vec!["id_token"],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: algs,
    }
}

/// One file to write and serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedFile {
    /// Relative to the output directory, `/`-separated.
    pub rel_path: &'static str,
    pub url: String,
    pub content_type: &'static str,
    #[serde(skip)]
    pub contents: String,
}

/// The discovery document and the JWKS, ready to write.
pub fn published_files(
    issuer: &Issuer,
    layout: JwksLayout,
    keys: &[PublicKey],
) -> Vec<PublishedFile> {
    let doc = discovery_document(issuer, layout, keys);
    vec![
        PublishedFile {
            rel_path: DISCOVERY_PATH,
            url: url_under(issuer, DISCOVERY_PATH),
            content_type: JSON_CONTENT_TYPE,
            contents: to_pretty_json(&doc),
        },
        PublishedFile {
            rel_path: jwks_path(layout),
            url: doc.jwks_uri.clone(),
            content_type: JWKS_CONTENT_TYPE,
            contents: to_pretty_json(&jwks(keys)),
        },
    ]
}
