//! Running commands and timing phases, with every command printed before it runs.
use std::{ffi::OsStr, path::Path, process::Command, time::Instant};

use anyhow::{bail, Context, Result};

/// Runs one named phase and prints how long it took.
pub fn phase(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("==> {name}");
    let started = Instant::now();
    let result = f();
    let outcome = if result.is_ok() { "done" } else { "FAILED" };
    println!("==> {name}: {outcome} in {:.1?}", started.elapsed());
    result.with_context(|| format!("phase `{name}` failed"))
}

/// Runs the cargo that runs xtask (the userspace toolchain) in `dir`.
pub fn cargo(dir: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    command(dir, &cargo, args)
}

/// Runs a program to completion, failing when it exits non-zero.
pub fn command(dir: &Path, program: &OsStr, args: &[&str]) -> Result<()> {
    status(Command::new(program).args(args).current_dir(dir))
}

/// Runs a prepared command, failing with the command line when it exits non-zero.
pub fn status(command: &mut Command) -> Result<()> {
    let line = describe(command);
    println!("+ {line}");
    let status = command
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed with {status}");
    }
    Ok(())
}

/// Output of a command that only reports something; `None` when it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line, for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
