//! The smallest real demo: one packet flow passing, dropped by the eBPF classifier inside
//! a network namespace once the server's ingress is isolated with no rule for the client,
//! and passing again once a rule allows it.
use super::topology::PodPair;
use crate::datapath::{
    pins::ScratchPinRoot,
    rules::{EndpointPolicy, Isolation, PeerBlock, Peers, Ports, Rule},
    Datapath, EndpointSettings,
};
use anyhow::{ensure, Context};

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

    // Its own pin directory, removed at the end: the demo never touches a real agent's.
    let pins = ScratchPinRoot::create("demo");
    let mut datapath =
        Datapath::load_at(pins.root().clone()).context("loading netwarden's eBPF object")?;
    let server = datapath.attach(&pods.server_interface())?;
    println!(
        "attached ingress + egress classifiers to {}",
        pods.server_interface()
    );
    let addresses = [PodPair::SERVER_ADDRESS.into()];
    let open = EndpointPolicy::default();
    datapath.program(&server, &open, &addresses, EndpointSettings::default())?;
    step(&pods, "attached, not isolated", true)?;

    let isolated = EndpointPolicy {
        ingress: Isolation::Isolated(Vec::new()),
        ..EndpointPolicy::default()
    };
    datapath.program(&server, &isolated, &addresses, EndpointSettings::default())?;
    println!("server ingress isolated, no rule");
    step(&pods, "client not allowed", false)?;

    let allowed = EndpointPolicy {
        ingress: Isolation::Isolated(vec![Rule {
            peers: Peers::Blocks(vec![PeerBlock::host(PodPair::CLIENT_ADDRESS.into())]),
            ports: Ports::Any,
        }]),
        ..EndpointPolicy::default()
    };
    datapath.program(&server, &allowed, &addresses, EndpointSettings::default())?;
    println!("rule: ingress from {} allowed", PodPair::CLIENT_ADDRESS);
    step(&pods, "client allowed", true)?;

    datapath.program(&server, &isolated, &addresses, EndpointSettings::default())?;
    println!("rule removed again");
    step(&pods, "client no longer allowed", false)?;

    datapath.detach(&pods.server_interface())?;
    println!("detached the classifiers");
    step(&pods, "detached", true)?;
    println!("demo finished; removing its namespaces and pins");
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
