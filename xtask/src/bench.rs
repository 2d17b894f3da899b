//! `cargo xtask bench datapath`: builds the eBPF object and the release agent, then runs the
//! agent's datapath benchmark (BPF_PROG_TEST_RUN, root) and writes docs/bench/datapath.md.
use std::path::Path;

use anyhow::Result;
use clap::ValueEnum;

use crate::{ebpf, run, setup};

/// What to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// ns per packet of the tc classifiers: floor, established, new allowed, new denied.
    Datapath,
}

pub fn run(root: &Path, target: Target) -> Result<()> {
    match target {
        Target::Datapath => datapath(root),
    }
}

fn datapath(root: &Path) -> Result<()> {
    setup::run()?;
    ebpf::build(root)?;
    run::phase("build netwarden", || {
        run::cargo(root, &["build", "--release", "-p", "netwarden-agent"])
    })?;
    let output = root.join("docs/bench/datapath.md");
    run::phase("bench datapath", || {
        run::command(
            root,
            root.join("target/release/netwarden").as_os_str(),
            &["bench-datapath", "--output", &output.to_string_lossy()],
        )
    })
}
