//! `apply`: plan, write, (restart, verify, rollback).
use crate::cli::{ApplyOpts, GlobalOpts};
use crate::output::Outcome;

pub fn run(_g: &GlobalOpts, _o: &ApplyOpts) -> anyhow::Result<Outcome> {
    anyhow::bail!("apply is being written")
}
