//! The time claims of a token (`exp`, `nbf`, `iat`) checked the way a cloud
//! provider checks them: against its own clock, with go-jose's 60 s leeway
//! (`jwt.DefaultLeeway`, what kube-apiserver and STS-style validators allow).
//! The apiserver stamps tokens with the node's clock, so a skewed node clock
//! makes tokens look expired or issued in the future to everyone else: the
//! outside clock is a server's HTTP `Date` header.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::Value;

/// Seconds of clock difference tolerated on each check.
pub const LEEWAY_SECS: i64 = 60;

/// `exp` (required), `nbf` and `iat` (optional), in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
}

/// A JSON NumericDate (an integer or a fraction; go-jose truncates).
fn numeric_date(claims: &Value, name: &str) -> Result<Option<i64>> {
    match &claims[name] {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)) {
            Some(t) => Ok(Some(t)),
            None => bail!("the token's {name} {n} is not a time (seconds since 1970)"),
        },
        other => bail!(
            "the token is malformed: its {name} is {other}, not a number (seconds since 1970)"
        ),
    }
}

/// Read the time claims; a missing `exp` or a claim that is not a number is
/// refused as malformed (cloud providers require `exp`).
pub fn times(claims: &Value) -> Result<Times> {
    let Some(exp) = numeric_date(claims, "exp")? else {
        bail!("the token is malformed: it has no exp (cloud providers refuse tokens that never expire)");
    };
    Ok(Times {
        exp,
        nbf: numeric_date(claims, "nbf")?,
        iat: numeric_date(claims, "iat")?,
    })
}

/// The clock a token is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    /// Seconds since the epoch.
    pub now: i64,
    /// Whose clock, for messages: "the Date header of https://...".
    pub source: String,
    /// This node's clock minus `now`, when `now` is not the node's own.
    pub node_skew: Option<i64>,
}

/// Seconds since the epoch of `t` (negative before 1970).
pub fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

impl Clock {
    /// `outside`: a server's `Date` from `url`; without one, the node's
    /// clock (which cannot show its own skew).
    pub fn new(node_now: SystemTime, outside: Option<SystemTime>, url: &str) -> Clock {
        let node = unix(node_now);
        match outside {
            Some(t) => Clock {
                now: unix(t),
                source: format!("the Date header of {url}"),
                node_skew: Some(node - unix(t)),
            },
            None => Clock {
                now: node,
                source: format!("this node's clock ({url} sent no usable Date header)"),
                node_skew: None,
            },
        }
    }

    /// When the node's clock is off by more than the leeway: what to say.
    pub fn skew_note(&self) -> Option<String> {
        let skew = self.node_skew?;
        (skew.abs() > LEEWAY_SECS).then(|| {
            format!(
                "this node's clock is {} s {} {}: the apiserver stamps tokens with the node's time, so cloud \
                 providers see them skewed; fix the node's time (NTP, chronyd, systemd-timesyncd)",
                skew.abs(),
                if skew > 0 { "ahead of" } else { "behind" },
                self.source
            )
        })
    }
}

/// Refuse a token that is expired, not yet valid or issued in the future by
/// `clock`, beyond the leeway (go-jose `Claims.ValidateWithLeeway`: expired
/// when now - leeway is after exp; nbf and iat when now + leeway is before
/// them). The message names the claim and the clocks.
pub fn check_times(t: &Times, clock: &Clock) -> Result<()> {
    let problem = if clock.now > t.exp + LEEWAY_SECS {
        Some(format!(
            "the token expired {} s before {} (exp {}, leeway {LEEWAY_SECS} s): STS refuses expired tokens",
            clock.now - t.exp,
            clock.source,
            t.exp
        ))
    } else {
        [("nbf", t.nbf), ("iat", t.iat)]
            .into_iter()
            .find_map(|(name, at)| {
                let at = at?;
                (at > clock.now + LEEWAY_SECS).then(|| {
                    format!(
                        "the token's {name} is {} s ahead of {} ({name} {at}, leeway {LEEWAY_SECS} s): STS refuses \
                         tokens from the future",
                        at - clock.now,
                        clock.source
                    )
                })
            })
    };
    match (problem, clock.skew_note()) {
        (None, _) => Ok(()),
        (Some(p), Some(note)) => bail!("{p}; {note}"),
        (Some(p), None) => bail!("{p}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    fn outside(node: i64) -> Clock {
        Clock::new(at(node), Some(at(NOW)), "https://h/x")
    }

    fn t(iat: i64, exp: i64) -> Times {
        Times {
            exp,
            nbf: Some(iat),
            iat: Some(iat),
        }
    }

    #[test]
    fn times_within_the_leeway_pass_and_beyond_it_fail() {
        let c = outside(NOW);
        check_times(&t(NOW, NOW + 600), &c).unwrap();
        check_times(&t(NOW + 60, NOW + 600), &c).unwrap();
        check_times(&t(NOW - 700, NOW - 60), &c).unwrap();
        let e = check_times(&t(NOW - 700, NOW - 61), &c)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the token expired 61 s before the Date header of https://h/x"),
            "{e}"
        );
        assert!(!e.contains("this node's clock"), "no skew: {e}");
        let e = check_times(&t(NOW + 61, NOW + 600), &c)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the token's nbf is 61 s ahead"), "{e}");
        let only_iat = Times {
            exp: NOW + 600,
            nbf: None,
            iat: Some(NOW + 3600),
        };
        let e = check_times(&only_iat, &c).unwrap_err().to_string();
        assert!(e.starts_with("the token's iat is 3600 s ahead"), "{e}");
    }

    #[test]
    fn a_skewed_node_clock_is_named() {
        // The node runs an hour ahead; the apiserver stamps iat with its time.
        let c = outside(NOW + 3600);
        assert_eq!(c.node_skew, Some(3600));
        let e = check_times(&t(NOW + 3600, NOW + 4200), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nbf is 3600 s ahead"), "{e}");
        assert!(
            e.contains("this node's clock is 3600 s ahead of the Date header of https://h/x"),
            "{e}"
        );
        // Twenty minutes behind: a 10-minute token is already expired out there.
        let c = outside(NOW - 1200);
        let e = check_times(&t(NOW - 1200, NOW - 600), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expired 600 s before"), "{e}");
        assert!(e.contains("1200 s behind"), "{e}");
        // Without an outside clock the node's is used and no skew is claimed.
        let c = Clock::new(at(NOW), None, "https://h/x");
        assert_eq!((c.now, c.node_skew), (NOW, None));
        assert!(c.source.contains("no usable Date header"));
    }

    #[test]
    fn time_claims_must_be_numbers_and_exp_is_required() {
        let ok = times(&json!({"exp": 5, "iat": 4.9, "nbf": 3})).unwrap();
        assert_eq!(
            ok,
            Times {
                exp: 5,
                nbf: Some(3),
                iat: Some(4)
            }
        );
        assert_eq!(times(&json!({"exp": 5})).unwrap().iat, None);
        for (claims, want) in [
            (json!({"iat": 1}), "has no exp"),
            (json!({"exp": "5"}), "its exp is \"5\", not a number"),
            (json!({"exp": 5, "nbf": true}), "its nbf is true"),
            (json!({"exp": 5, "iat": [1]}), "its iat is [1]"),
        ] {
            let e = times(&claims).unwrap_err().to_string();
            assert!(e.contains(want), "{claims}: {e}");
        }
    }
}
