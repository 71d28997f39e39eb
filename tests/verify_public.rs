//! `verify --public` (`irsa_agent::verify::check_public`) judges a token the
//! way STS does, against documents served by a local HTTPS issuer host:
//! `exp`/`nbf`/`iat` by the host's clock (its `Date` header, which also shows
//! a skewed node clock), a published JWK whose kid, use or alg contradicts
//! its key, and malformed claims. Tokens are signed here with chosen claims
//! by the simulator's own signer (tests/support/sim/keys.rs), not the crate's.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use support::issuer_host::IssuerHost;
use support::sim::jwt::now_unix;
use support::sim::keys::{parse_signing_key_pem, SigningKey};

const JWKS_PATH: &str = "/c/openid/v1/jwks";

struct Published {
    host: IssuerHost,
    issuer: String,
    key: SigningKey,
    rt: tokio::runtime::Runtime,
}

impl Published {
    /// An issuer host serving the discovery document and the JWKS of a P-256
    /// key, exactly as kube-apiserver writes them.
    fn start() -> Self {
        let host = IssuerHost::start();
        let issuer = format!("{}/c", host.base());
        let key = parse_signing_key_pem(include_bytes!("fixtures/keys/ec256-sec1.pem")).unwrap();
        host.put(
            "/c/.well-known/openid-configuration",
            200,
            json!({
                "issuer": issuer,
                "jwks_uri": format!("{}{JWKS_PATH}", host.base()),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            })
            .to_string(),
        );
        let published = Published {
            host,
            issuer,
            key,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        published.publish_jwk(|_| {});
        published
    }

    /// Publish the key's JWK after `edit`.
    fn publish_jwk(&self, edit: impl FnOnce(&mut Value)) {
        let mut jwk: Value = serde_json::from_str(&self.key.public().jwk_json()).unwrap();
        edit(&mut jwk);
        self.host
            .put(JWKS_PATH, 200, json!({ "keys": [jwk] }).to_string());
    }

    /// A token as the apiserver issues it at `iat` (10 minutes), after `edit`.
    fn token(&self, iat: i64, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let mut header = json!({"alg": self.key.alg(), "kid": self.key.public().kid()});
        let mut claims = json!({
            "aud": ["sts.amazonaws.com"],
            "exp": iat + 600,
            "iat": iat,
            "iss": self.issuer,
            "nbf": iat,
            "sub": "system:serviceaccount:default:default",
        });
        edit(&mut header, &mut claims);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn check(&self, token: &str) -> anyhow::Result<irsa_agent::verify::Published> {
        self.rt.block_on(irsa_agent::verify::check_public(
            token,
            Some(self.host.ca_pem().as_bytes()),
        ))
    }

    fn refused(&self, token: &str) -> String {
        match self.check(token) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => format!("{e:#}"),
        }
    }
}

#[test]
fn a_current_token_passes_and_the_clock_skew_is_reported() {
    let p = Published::start();
    let ok = p.check(&p.token(now_unix(), |_, _| {})).unwrap();
    let skew = ok
        .node_clock_skew_secs
        .expect("the host sends a Date header");
    assert!(skew.abs() <= 5, "{skew}");
    assert_eq!(ok.clock_warning, None);
    // Within the 60 s leeway: a node a little ahead is fine.
    p.check(&p.token(now_unix() + 30, |_, _| {})).unwrap();
}

#[test]
fn an_expired_token_is_refused() {
    let p = Published::start();
    let e = p.refused(&p.token(now_unix() - 720, |_, _| {}));
    assert!(
        e.starts_with("the published documents verify the token, but STS would refuse it"),
        "{e}"
    );
    assert!(e.contains("the token expired 1"), "{e}");
    assert!(
        e.contains(&format!("before the Date header of {}", p.host.base())),
        "{e}"
    );
    // The host's clock agrees with the node's: no skew is blamed.
    assert!(!e.contains("this node's clock"), "{e}");
}

#[test]
fn a_token_from_the_future_is_refused() {
    let p = Published::start();
    let e = p.refused(&p.token(now_unix() + 3600, |_, _| {}));
    assert!(e.contains("the token's nbf is 3"), "{e}");
    assert!(e.contains("STS refuses tokens from the future"), "{e}");
    // iat alone (no nbf) ahead beyond the leeway.
    let e = p.refused(&p.token(now_unix() + 300, |_, c| {
        c.as_object_mut().unwrap().remove("nbf");
    }));
    assert!(e.contains("the token's iat is"), "{e}");
}

#[test]
fn a_skewed_node_clock_is_detected_from_the_date_header() {
    let p = Published::start();
    // The world is an hour behind this node: the apiserver's fresh token is
    // from the future out there.
    p.host.set_date_offset(Some(-3600));
    let e = p.refused(&p.token(now_unix(), |_, _| {}));
    assert!(e.contains("nbf is"), "{e}");
    assert!(e.contains("this node's clock is 3"), "{e}");
    assert!(e.contains("s ahead of the Date header of"), "{e}");
    assert!(e.contains("fix the node's time"), "{e}");
    // The world is 20 minutes ahead: a 10-minute token is already expired.
    p.host.set_date_offset(Some(1200));
    let e = p.refused(&p.token(now_unix(), |_, _| {}));
    assert!(e.contains("the token expired"), "{e}");
    assert!(e.contains("s behind the Date header of"), "{e}");
    // 90 s behind: the token still passes, with a warning about the clock.
    p.host.set_date_offset(Some(90));
    let ok = p.check(&p.token(now_unix(), |_, _| {})).unwrap();
    assert!(ok.node_clock_skew_secs.unwrap() < -60, "{ok:?}");
    assert!(
        ok.clock_warning
            .as_deref()
            .is_some_and(|w| w.contains("s behind the Date header")),
        "{ok:?}"
    );
}

#[test]
fn a_jwk_whose_kid_is_not_its_key_is_refused() {
    let p = Published::start();
    // The token and the JWK agree on a kid, and the key verifies the
    // signature, but the kid is not the id kube-apiserver computes.
    p.publish_jwk(|j| j["kid"] = json!("my-key-1"));
    let e = p.refused(&p.token(now_unix(), |h, _| h["kid"] = json!("my-key-1")));
    assert!(e.contains("the key with kid \"my-key-1\""), "{e}");
    assert!(
        e.contains(&format!(
            "is not the id of its key material, {:?}",
            p.key.public().kid()
        )),
        "{e}"
    );
}

#[test]
fn a_jwk_with_the_wrong_use_or_alg_is_refused() {
    let p = Published::start();
    p.publish_jwk(|j| j["use"] = json!("enc"));
    let e = p.refused(&p.token(now_unix(), |_, _| {}));
    assert!(e.contains("\"use\" is \"enc\", not \"sig\""), "{e}");
    p.publish_jwk(|j| j["alg"] = json!("RS256"));
    let e = p.refused(&p.token(now_unix(), |_, _| {}));
    assert!(
        e.contains("\"alg\" is \"RS256\", but its key (EC P-256) signs with ES256"),
        "{e}"
    );
    // Put right again, it passes.
    p.publish_jwk(|_| {});
    p.check(&p.token(now_unix(), |_, _| {})).unwrap();
}

#[test]
fn a_non_string_iss_or_sub_is_refused_as_malformed() {
    let p = Published::start();
    let iss = p.issuer.clone();
    for (claim, value) in [
        ("iss", json!([iss])),
        ("iss", json!({"url": iss})),
        ("sub", json!(7)),
    ] {
        let e = p.refused(&p.token(now_unix(), |_, c| c[claim] = value.clone()));
        assert!(
            e.starts_with(&format!("the token is malformed: its {claim} is")),
            "{claim}: {e}"
        );
    }
    let e = p.refused(&p.token(now_unix(), |_, c| c["exp"] = json!("soon")));
    assert!(e.contains("its exp is \"soon\", not a number"), "{e}");
}
