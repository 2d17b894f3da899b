//! `cargo xtask fuzz [TARGET] [--seconds N | --runs N]`: builds the libFuzzer targets in
//! `tests/fuzz` with the coverage instrumentation cargo-fuzz uses (stable flags only, no
//! sanitizer: the code is safe Rust, and overflow checks and debug assertions are on), then
//! runs each target from its seed corpus and the corpus earlier runs grew, for a set time
//! or number of executions, and prints what each reached. A crash or a hang fails the run
//! and leaves the input under `target/fuzz/artifacts/<target>/`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::run;

/// Every target (`tests/fuzz/fuzz_targets/<name>.rs`) and the longest input it gets.
pub const TARGETS: &[(&str, usize)] = &[
    ("networks_annotation", 4096),
    ("network_status", 4096),
    ("nad_plan", 8192),
    ("cni_env", 4096),
    ("agent_request", 8192),
    ("cni_result", 8192),
    ("cache_record", 16384),
    ("policy_engine", 16384),
    ("packet_model", 1515),
    ("packet_kernel", 1515),
];

/// Seconds one input may take before it counts as a hang.
const HANG_SECONDS: u32 = 10;

/// How long each target runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Seconds(u32),
    /// Executions, with a generous time limit so that a slow target still ends.
    Runs(u64),
}

/// What one target reached.
struct Reached {
    target: &'static str,
    executions: u64,
    per_second: u64,
    corpus: usize,
    peak_rss_mb: u64,
}

/// Builds the targets and runs `only` (or all of them) for `budget` each.
pub fn run(root: &Path, only: Option<&str>, budget: Budget) -> Result<()> {
    let targets: Vec<(&'static str, usize)> = match only {
        None => TARGETS.to_vec(),
        Some(name) => match TARGETS.iter().find(|(t, _)| *t == name) {
            Some(target) => vec![*target],
            None => bail!(
                "no fuzz target {name:?}; the targets are {}",
                TARGETS
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let bin_dir = build(root)?;
    let mut reached = Vec::new();
    for (target, max_len) in targets {
        run::phase(&format!("fuzz {target}"), || {
            reached.push(fuzz(root, &bin_dir, target, max_len, budget)?);
            Ok(())
        })?;
    }
    println!(
        "{:<20} {:>12} {:>10} {:>8} {:>9}",
        "target", "executions", "exec/s", "corpus", "peak RSS"
    );
    for r in &reached {
        println!(
            "{:<20} {:>12} {:>10} {:>8} {:>6} MB",
            r.target, r.executions, r.per_second, r.corpus, r.peak_rss_mb
        );
    }
    Ok(())
}

fn target_dir(root: &Path) -> PathBuf {
    root.join("target/fuzz")
}

/// Builds every target; returns the directory holding the binaries.
fn build(root: &Path) -> Result<PathBuf> {
    let host = run::output("rustc", &["-vV"])
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        })
        .context("cannot read the host target from `rustc -vV`")?;
    // cargo-fuzz's instrumentation. With an explicit --target, RUSTFLAGS reach only the
    // target's crates, not build scripts and proc macros.
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    let target_dir = target_dir(root);
    run::phase("build fuzz targets", || {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run::status(
            Command::new(cargo)
                .current_dir(root)
                .args(["build", "--release", "--bins", "--manifest-path"])
                .arg(root.join("tests/fuzz/Cargo.toml"))
                .args(["--target", &host, "--target-dir"])
                .arg(&target_dir)
                .env("RUSTFLAGS", flags),
        )
    })?;
    Ok(target_dir.join(host).join("release"))
}

fn fuzz(
    root: &Path,
    bin_dir: &Path,
    target: &'static str,
    max_len: usize,
    budget: Budget,
) -> Result<Reached> {
    let work = target_dir(root);
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    let log = work.join("logs").join(format!("{target}.log"));
    for dir in [&corpus, &artifacts, &work.join("logs")] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let seeds = root.join("tests/fuzz/seeds").join(target);
    let limit = match budget {
        Budget::Seconds(s) => format!("-max_total_time={s}"),
        Budget::Runs(n) => format!("-runs={n}"),
    };
    let mut args = vec![
        limit,
        format!("-timeout={HANG_SECONDS}"),
        format!("-max_len={max_len}"),
        "-rss_limit_mb=4096".to_owned(),
        "-print_final_stats=1".to_owned(),
        format!("-artifact_prefix={}/", artifacts.display()),
    ];
    // Every target but the packet ones reads JSON (or YAML).
    if !target.starts_with("packet_") {
        args.push(format!(
            "-dict={}",
            root.join("tests/fuzz/json.dict").display()
        ));
    }
    let mut command = Command::new(bin_dir.join(target));
    command
        .args(args)
        // New inputs go to the first directory; the seeds are only read.
        .arg(&corpus)
        .arg(&seeds)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?);
    println!("+ {} (log: {})", run::describe(&command), log.display());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start fuzz target {target}"))?;
    let status = child.wait()?;
    remove_scratch_pins(child.id());
    let text = fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
        bail!(
            "fuzz target {target} failed ({status}): the input is under {}; \
             replay it with `{} <input>`",
            artifacts.display(),
            bin_dir.join(target).display()
        );
    }
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Reached {
        target,
        executions: stat("number_of_executed_units"),
        per_second: stat("average_exec_per_sec"),
        corpus: fs::read_dir(&corpus).map_or(0, |d| d.count()),
        peak_rss_mb: stat("peak_rss_mb"),
    })
}

/// The packet_kernel target pins its maps under `/sys/fs/bpf/nw-fuzz-<pid>-<n>` and removes
/// them at exit; after a crash they are removed here.
fn remove_scratch_pins(pid: u32) {
    let prefix = format!("nw-fuzz-{pid}-");
    let Ok(entries) = fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
