//! `detect`.
use crate::cli::{DetectOpts, GlobalOpts};
use crate::output::Outcome;

pub fn run(_g: &GlobalOpts, _o: &DetectOpts) -> anyhow::Result<Outcome> {
    anyhow::bail!("detect is being written")
}
