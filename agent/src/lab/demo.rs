//! The smallest real demo: one packet flow passing, dropped by the eBPF classifier inside
//! a network namespace, and passing again once the classifier is detached.
use anyhow::{ensure, Context};

use super::topology::PodPair;
use crate::datapath::Datapath;

/// Runs the demo, printing each step; fails if any step does not behave as it says.
pub async fn run() -> anyhow::Result<()> {
    let pods = PodPair::create("demo").context("creating the demo's network namespaces")?;
    println!(
        "created namespaces {} ({}) and {} ({}) joined by a veth pair",
        pods.client.name(),
        PodPair::CLIENT_ADDRESS,
        pods.server.name(),
        PodPair::SERVER_ADDRESS
    );
    step(&pods, "before netwarden", true)?;

    let mut datapath = Datapath::load().context("loading netwarden's eBPF object")?;
    let attachment = datapath.attach(&pods.server_interface())?;
    println!("attached the classifier to {}", attachment.target());
    step(&pods, "attached, deny map empty", true)?;

    datapath.deny_source(PodPair::CLIENT_ADDRESS)?;
    println!("deny map: + {}", PodPair::CLIENT_ADDRESS);
    step(&pods, "client denied", false)?;

    datapath.detach(attachment)?;
    println!("detached the classifier");
    step(&pods, "detached", true)?;
    println!("demo finished; removing its namespaces");
    Ok(())
}

fn step(pods: &PodPair, what: &str, expect_pass: bool) -> anyhow::Result<()> {
    let passed = pods.client_reaches_server()?;
    println!(
        "  ping {} -> {}: {:<7} ({what})",
        PodPair::CLIENT_ADDRESS,
        PodPair::SERVER_ADDRESS,
        if passed { "PASSED" } else { "DROPPED" }
    );
    ensure!(
        passed == expect_pass,
        "expected the ping to be {} {what}",
        if expect_pass { "answered" } else { "dropped" }
    );
    Ok(())
}
