//! `cargo xtask bench datapath|engine|attach|e2e`: builds what the benchmark needs, runs it
//! and writes its figures to docs/bench/<target>.md (e2e: docs/benchmarks.md and
//! docs/benchmarks.svg). Figures, not assertions.
use std::path::Path;

use anyhow::Result;
use clap::ValueEnum;

use crate::{ebpf, run, setup};

/// What to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// ns per packet of the tc classifiers: floor, established, new allowed, new denied.
    Datapath,
    /// The policy engine: full compile, single-change updates and memory at 1k-50k pods.
    Engine,
    /// ADD and DEL latency through netwarden versus the same delegates run directly.
    Attach,
    /// netwarden, no enforcement and the multi-networkpolicy-iptables shape side by side
    /// on two lab pods: request, connection and throughput rates, policy change times.
    E2e,
}

pub fn run(root: &Path, target: Target) -> Result<()> {
    setup::run()?;
    ebpf::build(root)?;
    match target {
        Target::Datapath => datapath(root),
        Target::Engine => run::phase("bench engine", || {
            run::cargo(
                root,
                &["bench", "-p", "netwarden-agent", "--bench", "engine"],
            )
        }),
        // These run the release binaries the runtime and the node would run.
        Target::Attach => tests_bench(root, "attach"),
        Target::E2e => tests_bench(root, "e2e"),
    }
}

fn tests_bench(root: &Path, bench: &str) -> Result<()> {
    build_release(root, &["-p", "netwarden-agent", "-p", "netwarden-cni"])?;
    run::phase(&format!("bench {bench}"), || {
        run::cargo(root, &["bench", "-p", "netwarden-tests", "--bench", bench])
    })
}

fn build_release(root: &Path, packages: &[&str]) -> Result<()> {
    run::phase("build release binaries", || {
        let mut args = vec!["build", "--release"];
        args.extend_from_slice(packages);
        run::cargo(root, &args)
    })
}

fn datapath(root: &Path) -> Result<()> {
    build_release(root, &["-p", "netwarden-agent"])?;
    let output = root.join("docs/bench/datapath.md");
    run::phase("bench datapath", || {
        run::command(
            root,
            root.join("target/release/netwarden").as_os_str(),
            &["bench-datapath", "--output", &output.to_string_lossy()],
        )
    })
}
