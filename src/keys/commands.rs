//! `keygen`, `discovery` and `aws`.

use crate::cli::{AwsOpts, DiscoveryOpts, KeygenOpts};
use crate::output::Outcome;

pub fn keygen(_opts: &KeygenOpts) -> anyhow::Result<Outcome> {
    anyhow::bail!("keygen is not implemented yet")
}

pub fn discovery(_opts: &DiscoveryOpts) -> anyhow::Result<Outcome> {
    anyhow::bail!("discovery is not implemented yet")
}

pub fn aws(_opts: &AwsOpts) -> anyhow::Result<Outcome> {
    anyhow::bail!("aws is not implemented yet")
}
