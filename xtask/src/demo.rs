//! `cargo xtask demo`: the local lab on the quickstart example. Brings it up, prints the
//! net1 truth table, applies a policy, prints the table again with a deny event and an
//! `explain` of it, deletes the policy, prints the table once more (everything passes
//! again), and tears the lab down (also when a step fails). `cargo xtask test` runs it
//! too, on the binaries the tests use and under a lab name of its own.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::run;

const NETWORK: &str = "default/macvlan-conf";
/// Each lab node's agent serves explain and flows here, inside the node's namespace.
const AGENT: &str = "http://127.0.0.1:9310";
/// How long the agents may take to bring a change into their tables.
const SETTLE: Duration = Duration::from_secs(20);

/// The demo as the README runs it: release binaries, the lab `netwarden-demo`.
pub fn run(root: &Path) -> Result<()> {
    run::phase("build netwarden", || {
        run::cargo(
            root,
            &[
                "build",
                "--release",
                "-p",
                "netwarden-agent",
                "-p",
                "netwarden-cni",
            ],
        )
    })?;
    Demo {
        root: root.to_owned(),
        netwarden: root.join("target/release/netwarden"),
        lab: "netwarden-demo".into(),
    }
    .play()
}

/// The demo inside `cargo xtask test`: the debug binaries the end-to-end tests just used,
/// and a lab name no one else uses (a demo someone runs meanwhile is left alone).
pub fn run_in_tests(root: &Path) -> Result<()> {
    Demo {
        root: root.to_owned(),
        netwarden: root.join("target/debug/netwarden"),
        lab: format!("demo-{}", std::process::id() % 1_000_000),
    }
    .play()
}

struct Demo {
    root: PathBuf,
    netwarden: PathBuf,
    /// The lab's name; its namespaces are `nwlab-<name>-<node>` (agent/src/lab/state.rs).
    lab: String,
}

impl Demo {
    fn play(&self) -> Result<()> {
        // Leftovers of an interrupted demo would make `lab up` refuse.
        let _ = self.command(&["down"]).stderr(Stdio::null()).status();
        let result = self.steps();
        let down = run::phase("lab down", || self.lab(&["down"]));
        result.and(down)
    }

    fn steps(&self) -> Result<()> {
        run::phase("lab up examples/quickstart", || {
            self.lab(&["up", "examples/quickstart"])
        })?;
        let probe = ["probe", "--network", NETWORK, "--port", "80"];
        let mut open = Value::Null;
        run::phase("probe net1 with no policy", || {
            open = self.matrix()?;
            self.lab(&probe)
        })?;
        run::phase("apply examples/quickstart-policy.yaml", || {
            self.lab(&["apply", "-f", "examples/quickstart-policy.yaml"])?;
            // The agents watch the store: wait until the probes see the policy.
            self.settle("the policy to deny some probes", |now| now != &open)
        })?;
        run::phase("probe net1 again, watching node-1's verdict events", || {
            self.probe_seeing_denies(&probe)
        })?;
        run::phase("explain samplepod -> web-2", || {
            run::status(&mut self.in_node(
                "node-2",
                &[
                    "explain",
                    "--from",
                    "default/samplepod",
                    "--to",
                    "default/web-2",
                    "--network",
                    NETWORK,
                    "--port",
                    "80",
                    "--agent",
                    AGENT,
                ],
            ))
        })?;
        run::phase("delete the policy and probe net1 once more", || {
            self.lab(&["delete", "-f", "examples/quickstart-policy.yaml"])?;
            self.settle("every probe to pass again", |now| now == &open)?;
            self.lab(&probe)
        })
    }

    /// Probes (printing the table) while `netwarden flows` streams node-1's verdicts, until
    /// a deny event arrives; fails when none comes after a few probes.
    fn probe_seeing_denies(&self, probe: &[&str]) -> Result<()> {
        let mut flows = self
            .in_node("node-1", &["flows", "--agent", AGENT])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting netwarden flows")?;
        let stdout = flows.stdout.take().context("flows' stdout")?;
        let (lines, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let mut denials = Vec::new();
        let mut outcome = Ok(());
        for _ in 0..5 {
            if let Err(e) = self.lab(probe) {
                outcome = Err(e);
                break;
            }
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Ok(line) =
                events.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                if line.contains(" DENY ") {
                    denials.push(line);
                }
            }
            if !denials.is_empty() {
                break;
            }
        }
        let _ = flows.kill();
        let _ = flows.wait();
        outcome?;
        if denials.is_empty() {
            bail!(
                "no deny event reached `netwarden flows` on node-1 while the policy denied \
                 probes to its pods; its agent's log is under /run/netwarden-lab/{}/",
                self.lab
            );
        }
        println!(
            "deny events on node-1 (netwarden flows), the first of {}:",
            denials.len()
        );
        for line in denials.iter().take(3) {
            println!("  {line}");
        }
        Ok(())
    }

    /// Polls net1's truth table until `done` holds of it twice in a row (both nodes'
    /// agents have taken the change in, not only the first).
    fn settle(&self, what: &str, done: impl Fn(&Value) -> bool) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        let mut last = None;
        loop {
            let now = self.matrix()?;
            if done(&now) && last.as_ref() == Some(&now) {
                return Ok(());
            }
            last = Some(now);
            if Instant::now() > deadline {
                bail!(
                    "waited {SETTLE:?} for {what}; the agents' logs are under /run/netwarden-lab/{}/",
                    self.lab
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// net1's truth table on port 80, as `lab probe --output json` gives it.
    fn matrix(&self) -> Result<Value> {
        let out: Output = self
            .command(&[
                "probe",
                "--network",
                NETWORK,
                "--port",
                "80",
                "--output",
                "json",
            ])
            .output()
            .context("running lab probe")?;
        if !out.status.success() {
            bail!("lab probe failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let probed: Value =
            serde_json::from_slice(&out.stdout).context("lab probe --output json")?;
        Ok(probed["matrix"].clone())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.netwarden);
        command
            .arg("lab")
            .args(args)
            .args(["--name", &self.lab])
            .current_dir(&self.root);
        command
    }

    fn lab(&self, args: &[&str]) -> Result<()> {
        run::status(&mut self.command(args))
    }

    /// `netwarden args` inside `node`'s network namespace (its agent listens there).
    fn in_node(&self, node: &str, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/nwlab-{}-{node}", self.lab))
            .arg("--")
            .arg(&self.netwarden)
            .args(args);
        command
    }
}
