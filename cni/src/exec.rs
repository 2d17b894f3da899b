//! Executing one CNI plugin binary: `<binDir>/<type>` with the CNI environment, the config
//! on stdin, a deadline, and its stdout read as a result or a CNI error.
use std::{
    io::{Read, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use rustix::{
    event::{poll, PollFd, PollFlags, Timespec},
    io::Errno,
    process::{
        getpid, getppid, pidfd_open, set_parent_process_death_signal, Pid, PidfdFlags, Signal,
    },
};

use crate::protocol::{CniError, Command, Request};

/// Finds and runs plugins from an ordered list of directories.
#[derive(Clone, Debug)]
pub struct PluginRunner {
    pub bin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("plugin {plugin:?} is not in any of {dirs:?}")]
    NotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("plugin {plugin:?} ({path}) could not start: {source}")]
    Spawn {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {plugin:?} {command} did not finish within {timeout:?} and was killed")]
    Timeout {
        plugin: String,
        command: Command,
        timeout: Duration,
    },
    #[error("plugin {plugin:?} {command} failed: {error}")]
    Plugin {
        plugin: String,
        command: Command,
        error: CniError,
    },
    #[error("plugin {plugin:?} {command} failed with {status} and no CNI error on stdout; stdout: {stdout_tail:?}; stderr: {stderr_tail:?}")]
    Failed {
        plugin: String,
        command: Command,
        status: ExitStatus,
        stdout_tail: String,
        stderr_tail: String,
    },
}

/// How much of a failing plugin's output an error quotes.
const TAIL: usize = 512;

impl PluginRunner {
    pub fn new(bin_dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        Self { bin_dirs, timeout }
    }

    /// The plugin's executable: the first `<dir>/<type>` that is a file.
    pub fn find(&self, plugin: &str) -> Result<PathBuf, ExecError> {
        self.bin_dirs
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|path| path.is_file())
            .ok_or_else(|| ExecError::NotFound {
                plugin: plugin.to_owned(),
                dirs: self.bin_dirs.clone(),
            })
    }

    /// Runs `plugin` for `request` with `stdin`; returns its stdout when it exits 0.
    pub fn run(&self, plugin: &str, request: &Request, stdin: &[u8]) -> Result<Vec<u8>, ExecError> {
        let path = self.find(plugin)?;
        self.run_path(plugin, &path, request, stdin)
    }

    fn run_path(
        &self,
        plugin: &str,
        path: &Path,
        request: &Request,
        stdin: &[u8],
    ) -> Result<Vec<u8>, ExecError> {
        let mut request = request.clone();
        if request.path.is_empty() {
            request.path = self.bin_dirs.clone();
        }
        let mut command = std::process::Command::new(path);
        let runner = getpid();
        // SAFETY: between fork and exec the child only makes the prctl and getppid system
        // calls.
        unsafe {
            command.pre_exec(move || die_with_parent(runner));
        }
        let mut child = command
            .envs(request.to_vars())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ExecError::Spawn {
                plugin: plugin.to_owned(),
                path: path.to_owned(),
                source,
            })?;
        let mut child_stdin = child.stdin.take().expect("stdin is piped");
        let mut child_stdout = child.stdout.take().expect("stdout is piped");
        let mut child_stderr = child.stderr.take().expect("stderr is piped");
        let (done, finished) = mpsc::channel();
        let output = std::thread::scope(|scope| {
            // A plugin that exits without reading stdin closes the pipe: not our failure.
            scope.spawn(move || {
                let _ = child_stdin.write_all(stdin);
            });
            let stderr = scope.spawn(move || {
                let mut buf = Vec::new();
                let _ = child_stderr.read_to_end(&mut buf);
                buf
            });
            let done_stdout = done.clone();
            scope.spawn(move || {
                let mut buf = Vec::new();
                let _ = child_stdout.read_to_end(&mut buf);
                let _ = done_stdout.send(buf);
            });
            // stdout reaches EOF when the plugin exits (or closes it): that is the signal
            // to reap it. The child is still ours, so killing it on timeout is race-free.
            let deadline = Instant::now() + self.timeout;
            let mut stdout = finished.recv_timeout(self.timeout).ok();
            // A plugin may close stdout and linger: it still has until the deadline to exit.
            if stdout.is_some() && !exits_by(&child, deadline) {
                stdout = None;
            }
            if stdout.is_none() {
                let _ = child.kill();
            }
            let status = child.wait();
            drop(done);
            (stdout, status, stderr.join().unwrap_or_default())
        });
        let (stdout, status, stderr) = output;
        let Some(stdout) = stdout else {
            return Err(ExecError::Timeout {
                plugin: plugin.to_owned(),
                command: request.command,
                timeout: self.timeout,
            });
        };
        let status = status.map_err(|source| ExecError::Spawn {
            plugin: plugin.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        if status.success() {
            return Ok(stdout);
        }
        if let Some(error) = CniError::parse(&stdout) {
            return Err(ExecError::Plugin {
                plugin: plugin.to_owned(),
                command: request.command,
                error,
            });
        }
        Err(ExecError::Failed {
            plugin: plugin.to_owned(),
            command: request.command,
            status,
            stdout_tail: tail(&stdout),
            stderr_tail: tail(&stderr),
        })
    }
}

/// In the plugin's process, before exec: SIGKILL when the thread that runs it ends. A
/// plugin of an agent that was killed must not finish its ADD after the DEL that cleaned
/// up behind it (it would leave an interface and an address nobody knows of).
fn die_with_parent(runner: Pid) -> std::io::Result<()> {
    set_parent_process_death_signal(Some(Signal::KILL))?;
    // The runner may have ended before the signal was armed.
    if getppid() != Some(runner) {
        return Err(std::io::Error::other(
            "the process running the plugin has ended",
        ));
    }
    Ok(())
}

/// Whether `child` exits by `deadline`, waited for on its pidfd without reaping it (so it
/// stays ours to kill). Without pidfds (Linux before 5.3) the answer is yes: the plugin has
/// closed its stdout, it is exiting.
fn exits_by(child: &Child, deadline: Instant) -> bool {
    let Ok(pidfd) = pidfd_open(Pid::from_child(child), PidfdFlags::empty()) else {
        return true;
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        match poll(&mut [PollFd::new(&pidfd, PollFlags::IN)], Some(&timeout)) {
            Ok(ready) => return ready > 0,
            Err(Errno::INTR) => continue,
            Err(_) => return true,
        }
    }
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(TAIL.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::protocol::ErrorCode;

    /// A plugin written as a shell script: a real executable, run the way delegates are.
    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn request() -> Request {
        Request::from_vars(|key| {
            Some(
                match key {
                    "CNI_COMMAND" => "ADD",
                    "CNI_CONTAINERID" => "c1",
                    "CNI_NETNS" => "/run/netns/x",
                    "CNI_IFNAME" => "net1",
                    "CNI_ARGS" => "IgnoreUnknown=true;K8S_POD_NAME=p",
                    _ => return None,
                }
                .into(),
            )
        })
        .unwrap()
    }

    fn runner(dir: &Path, timeout: Duration) -> PluginRunner {
        PluginRunner::new(vec![PathBuf::from("/nonexistent"), dir.to_owned()], timeout)
    }

    #[test]
    fn passes_environment_and_stdin_and_returns_stdout() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "echoer",
            r#"printf '%s|%s|%s|%s|%s|' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH"; cat"#,
        );
        let out = runner(dir.path(), Duration::from_secs(5))
            .run("echoer", &request(), b"{\"x\":1}")
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "ADD|c1|net1|IgnoreUnknown=true;K8S_POD_NAME=p|/nonexistent:{}|{{\"x\":1}}",
                dir.path().display()
            )
        );
    }

    #[test]
    fn a_cni_error_is_read_from_stdout() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "refuser",
            r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"no master"}'; exit 1"#,
        );
        let err = runner(dir.path(), Duration::from_secs(5))
            .run("refuser", &request(), b"{}")
            .unwrap_err();
        match &err {
            ExecError::Plugin { error, .. } => {
                assert_eq!(error.code, ErrorCode::InvalidConfig as u32)
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("no master"), "{err}");
    }

    #[test]
    fn garbage_output_names_plugin_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "crasher",
            "echo panic: oops >&2; echo garbage; exit 3",
        );
        let err = runner(dir.path(), Duration::from_secs(5))
            .run("crasher", &request(), b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"crasher\"") && err.contains("3") && err.contains("panic: oops"),
            "{err}"
        );
    }

    #[test]
    fn a_hung_plugin_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "sleeper", "exec sleep 30");
        let started = std::time::Instant::now();
        let err = runner(dir.path(), Duration::from_millis(200))
            .run("sleeper", &request(), b"{}")
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_plugin_that_closes_stdout_and_lingers_is_killed_too() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "lingerer", "exec >&- 2>&-; exec sleep 30");
        let err = runner(dir.path(), Duration::from_millis(200))
            .run("lingerer", &request(), b"{}")
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
    }

    #[test]
    fn a_missing_plugin_names_the_directories() {
        let dir = tempfile::tempdir().unwrap();
        let err = runner(dir.path(), Duration::from_secs(1))
            .run("nosuch", &request(), b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nosuch") && err.contains("/nonexistent"),
            "{err}"
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        let long = "x".repeat(2000) + "END";
        assert!(tail(long.as_bytes()).ends_with("END"));
        assert_eq!(tail(long.as_bytes()).len(), TAIL);
        assert_eq!(tail(b"  short \n"), "short");
    }
}
