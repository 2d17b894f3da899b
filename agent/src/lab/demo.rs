//! The smallest real demo: one packet flow passing, dropped by the eBPF classifier inside
//! a network namespace once the server's ingress is isolated with no rule for the client,
//! and passing again once a rule allows it.
use anyhow::{ensure, Context};
use ipnet::IpNet;

use super::topology::PodPair;
use crate::datapath::{
    pins::ScratchPinRoot, rules::Direction, Datapath, EndpointSettings, EndpointTables,
    PeerEntry,
};

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
    println!("attached ingress + egress classifiers to {}", pods.server_interface());
    let addresses = [PodPair::SERVER_ADDRESS.into()];
    let open = EndpointTables::default();
    datapath.program(&server, &open, &addresses, EndpointSettings::default())?;
    step(&pods, "attached, not isolated", true)?;

    let isolated = EndpointTables {
        ingress_isolated: true,
        ..EndpointTables::default()
    };
    datapath.program(&server, &isolated, &addresses, EndpointSettings::default())?;
    println!("server ingress isolated, no rule");
    step(&pods, "client not allowed", false)?;

    let allowed = EndpointTables {
        ingress_isolated: true,
        peers: vec![PeerEntry {
            direction: Direction::Ingress,
            prefix: IpNet::from(std::net::IpAddr::from(PodPair::CLIENT_ADDRESS)),
            class: 1,
            allow_all: true,
        }],
        ..EndpointTables::default()
    };
    datapath.program(&server, &allowed, &addresses, EndpointSettings::default())?;
    println!("rule: ingress from {} allowed", PodPair::CLIENT_ADDRESS);
    step(&pods, "client allowed", true)?;

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
