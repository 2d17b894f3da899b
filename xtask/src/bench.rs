//! `cargo xtask bench datapath|engine|attach`: builds what the benchmark needs, runs it and
//! writes its figures to docs/bench/<target>.md. Figures, not assertions.
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
        Target::Attach => {
            // The benchmark runs the release binaries the runtime and the node would run.
            build_release(root, &["-p", "netwarden-agent", "-p", "netwarden-cni"])?;
            run::phase("bench attach", || {
                run::cargo(
                    root,
                    &["bench", "-p", "netwarden-tests", "--bench", "attach"],
                )
            })
        }
    }
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
