//! `cargo xtask demo`: the local lab on the quickstart example. Brings it up, prints the
//! net1 truth table, applies a policy, prints the table again with a deny event and an
//! `explain` of it, deletes the policy, prints the table once more (everything passes
//! again), and tears the lab down (also when a step fails).
use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::run;

/// The lab's name; its namespaces are `nwlab-<name>-<node>` (agent/src/lab/state.rs).
const LAB: &str = "netwarden-demo";
const NETWORK: &str = "default/macvlan-conf";
/// Each lab node's agent serves explain and flows here, inside the node's namespace.
const AGENT: &str = "http://127.0.0.1:9310";

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
    let netwarden = root.join("target/release/netwarden");
    // Leftovers of an interrupted demo would make `lab up` refuse.
    let _ = Command::new(&netwarden)
        .args(["lab", "down", "--name", LAB])
        .stderr(Stdio::null())
        .status();
    let result = steps(root, &netwarden);
    let down = run::phase("lab down", || lab(&netwarden, root, &["down"]));
    result.and(down)
}

fn steps(root: &Path, netwarden: &Path) -> Result<()> {
    run::phase("lab up examples/quickstart", || {
        lab(netwarden, root, &["up", "examples/quickstart"])
    })?;
    let probe = ["probe", "--network", NETWORK, "--port", "80"];
    run::phase("probe net1 with no policy", || lab(netwarden, root, &probe))?;
    run::phase("apply examples/quickstart-policy.yaml", || {
        lab(
            netwarden,
            root,
            &["apply", "-f", "examples/quickstart-policy.yaml"],
        )?;
        // The agents watch the store; give them a moment to program the tables.
        thread::sleep(Duration::from_secs(2));
        Ok(())
    })?;
    run::phase("probe net1 again, watching node-1's verdict events", || {
        let mut flows = in_node(netwarden, "node-1", &["flows", "--agent", AGENT])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting netwarden flows")?;
        thread::sleep(Duration::from_millis(500));
        let probed = lab(netwarden, root, &probe);
        thread::sleep(Duration::from_secs(1));
        let _ = flows.kill();
        probed?;
        let events = String::from_utf8_lossy(&flows.wait_with_output()?.stdout).into_owned();
        let denials: Vec<&str> = events.lines().filter(|l| l.contains(" DENY ")).collect();
        if denials.is_empty() {
            bail!(
                "no deny event reached `netwarden flows` on node-1 while the policy denied \
                 probes to its pods; its agent's log is under /run/netwarden-lab/{LAB}/"
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
    })?;
    run::phase("explain samplepod -> web-2", || {
        run::status(&mut in_node(
            netwarden,
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
        lab(
            netwarden,
            root,
            &["delete", "-f", "examples/quickstart-policy.yaml"],
        )?;
        thread::sleep(Duration::from_secs(2));
        lab(netwarden, root, &probe)
    })
}

fn lab(netwarden: &Path, root: &Path, args: &[&str]) -> Result<()> {
    let mut all = vec!["lab"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--name", LAB]);
    run::command(root, netwarden.as_os_str(), &all)
}

/// `netwarden args` inside `node`'s network namespace (its agent listens there).
fn in_node(netwarden: &Path, node: &str, args: &[&str]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/nwlab-{LAB}-{node}"))
        .arg("--")
        .arg(netwarden)
        .args(args);
    command
}
