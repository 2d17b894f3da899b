//! `cargo xtask ...`: set up the toolchain, build the eBPF object and the binaries, test,
//! run the demo, run the benchmarks. Every command does its own setup first, so each works on a fresh machine.
mod bench;
mod demo;
mod ebpf;
mod fuzz;
mod run;
mod setup;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (Debian packages, bpf-linker, bpffs mount); idempotent.
    Setup,
    /// Build the eBPF object with its own toolchain and target directory.
    BuildEbpf,
    /// Build the eBPF object, then the release binaries that embed it.
    Build,
    /// fmt check, clippy -D warnings, unit tests, then the privileged tests (needs root).
    Test,
    /// Run the demo: the local lab on examples/quickstart, a policy applied, truth tables,
    /// a deny event and an explain (root).
    Demo,
    /// Run the fuzz targets (tests/fuzz): all, or one, for a time or a number of runs each
    /// (root: the packet_kernel target loads the classifiers).
    Fuzz {
        /// One target (default: every target).
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60, conflicts_with = "runs")]
        seconds: u32,
        /// Executions per target instead of a time.
        #[arg(long)]
        runs: Option<u64>,
    },
    /// Run a benchmark and write its figures under docs/bench/ (root; not part of `test`).
    Bench {
        #[arg(value_enum)]
        target: bench::Target,
    },
}

fn main() -> Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::BuildEbpf => {
            setup::run()?;
            ebpf::build(&root)
        }
        Command::Build => {
            setup::run()?;
            ebpf::build(&root)?;
            run::phase("build release binaries", || {
                run::cargo(&root, &["build", "--release", "--workspace", "--bins"])
            })
        }
        Command::Test => test(&root),
        Command::Bench { target } => {
            require_root("the benchmark loads eBPF programs")?;
            bench::run(&root, target)
        }
        Command::Fuzz {
            target,
            seconds,
            runs,
        } => {
            require_root("the packet_kernel target loads eBPF programs")?;
            setup::run()?;
            ebpf::build(&root)?;
            let budget = runs.map_or(fuzz::Budget::Seconds(seconds), fuzz::Budget::Runs);
            fuzz::run(&root, target.as_deref(), budget)
        }
        Command::Demo => {
            require_root("the demo creates network namespaces and loads eBPF programs")?;
            setup::run()?;
            ebpf::build(&root)?;
            demo::run(&root)
        }
    }
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS: u32 = 5;

fn test(root: &Path) -> Result<()> {
    require_root(
        "the privileged tests create network namespaces and load eBPF programs; \
         run `sudo -E cargo xtask test`",
    )?;
    let started = std::time::Instant::now();
    setup::run()?;
    ebpf::build(root)?;
    run::phase("fmt check", || {
        run::cargo(root, &["fmt", "--all", "--", "--check"])?;
        run::cargo(
            root,
            &[
                "fmt",
                "--manifest-path",
                "ebpf/programs/Cargo.toml",
                "--",
                "--check",
            ],
        )?;
        run::cargo(
            root,
            &[
                "fmt",
                "--manifest-path",
                "tests/fuzz/Cargo.toml",
                "--",
                "--check",
            ],
        )
    })?;
    run::phase("clippy", || {
        run::cargo(
            root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )
    })?;
    run::phase("validate manifests", || validate_manifests(root))?;
    run::phase("unit tests", || {
        run::cargo(
            root,
            &["test", "--workspace", "--exclude", "netwarden-tests"],
        )
    })?;
    // A short run of every fuzz target: its seeds and a few seconds of new inputs.
    fuzz::run(root, None, fuzz::Budget::Seconds(FUZZ_SECONDS))?;
    // The end-to-end tests run the real `netwarden` and `netwarden-cni` binaries.
    run::phase("build binaries", || {
        run::cargo(root, &["build", "--workspace", "--bins"])
    })?;
    run::phase("privileged end-to-end tests", || {
        // Every failing test binary is reported, not only the first.
        run::cargo(root, &["test", "--no-fail-fast", "-p", "netwarden-tests"])
    })?;
    // The README's other command, on the binaries just tested.
    run::phase("the demo", || demo::run_in_tests(root))?;
    println!("all tests passed in {:.1?}", started.elapsed());
    Ok(())
}

/// Every Kubernetes manifest under deploy/ against the Kubernetes schemas, offline and
/// strict (unknown fields are errors). kustomization.yaml files are kustomize's input, not
/// API objects.
fn validate_manifests(root: &Path) -> Result<()> {
    let mut manifests = Vec::new();
    let mut dirs = vec![root.join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                manifests.push(path);
            }
        }
    }
    manifests.sort();
    if manifests.is_empty() {
        bail!("no manifests under {}", root.join("deploy").display());
    }
    let manifests: Vec<String> = manifests
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["-m", "kubernetes_validate", "--strict"];
    args.extend(manifests.iter().map(String::as_str));
    run::command(root, "python3".as_ref(), &args)
}

fn require_root(why: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("refusing to run as a non-root user: {why}");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}
