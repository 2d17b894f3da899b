//! The lab's long-running processes (agents, pod servers): started inside a namespace,
//! detached so they outlive `lab up`, and stopped by pid only while that pid still runs
//! the command line the lab started.
use std::{
    fs::File,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::state::ProcessRecord;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

/// Starts `argv` inside network namespace `netns` (nsenter execs it, so the pid
/// is the program's), with output appended to `log`, in its own process group so a
/// terminal's Ctrl-C to `lab up` does not reach it.
pub fn spawn_in(netns: &str, argv: &[String], log: &Path) -> Result<ProcessRecord, ProcessError> {
    let command = argv.join(" ");
    let spawn_error = |source| ProcessError::Spawn {
        command: command.clone(),
        source,
    };
    let output = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(spawn_error)?;
    let errors = output.try_clone().map_err(spawn_error)?;
    // nsenter, not `ip netns exec`: the latter remounts /sys, hiding the bpffs the agent
    // pins under.
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .process_group(0)
        .spawn()
        .map_err(spawn_error)?;
    Ok(ProcessRecord {
        pid: child.id(),
        argv: argv.to_vec(),
    })
}

/// Whether `record`'s process is running (and is still the one the lab started).
pub fn is_running(record: &ProcessRecord) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", record.pid)) else {
        return false;
    };
    let running: Vec<&[u8]> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    let started: Vec<&[u8]> = record.argv.iter().map(|a| a.as_bytes()).collect();
    // A zombie (our own unreaped child) has an empty cmdline: it is not running.
    running == started
}

/// Stops the process: SIGTERM, then SIGKILL after a grace period. Not running is fine.
pub fn stop(record: &ProcessRecord) {
    if !is_running(record) {
        return;
    }
    signal(record, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while is_running(record) {
        if Instant::now() > deadline {
            signal(record, libc::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops every process inside network namespace `netns` (`/run/netns/NAME`): those a
/// crashed `lab up` started but never recorded. Only the lab's own namespaces are
/// passed here, so nothing else is touched.
pub fn stop_all_in(netns: &str) {
    let Ok(target) = std::fs::metadata(Path::new("/run/netns").join(netns)) else {
        return;
    };
    let inside = || -> Vec<libc::pid_t> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
            .filter(|&pid| pid != std::process::id() as libc::pid_t)
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|ns| (ns.dev(), ns.ino()) == (target.dev(), target.ino()))
            })
            .collect()
    };
    let started = Instant::now();
    // SIGTERM for 2 s, then SIGKILL; past 4 s, what is left is stuck in the kernel.
    while started.elapsed() < Duration::from_secs(4) {
        let pids = inside();
        if pids.is_empty() {
            return;
        }
        let signal = if started.elapsed() > Duration::from_secs(2) {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        for pid in pids {
            kill(pid, signal);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(record: &ProcessRecord, signal: libc::c_int) {
    kill(record.pid as libc::pid_t, signal);
}

fn kill(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, signal) };
}
