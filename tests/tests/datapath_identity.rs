//! Privileged: the endpoint identity the classifiers compute from a real packet, on both
//! hooks, is the key the agent computes from userspace (SO_NETNS_COOKIE, ifindex).
use netwarden_agent::{
    datapath::{pins::ScratchPinRoot, rules::EndpointPolicy, Datapath, EndpointSettings, Reason},
    lab::topology::PodPair,
};

#[tokio::test]
async fn both_hooks_see_the_pod_namespace_cookie_the_agent_reads() -> anyhow::Result<()> {
    let pods = PodPair::create("t-ident")?;
    let pins = ScratchPinRoot::create("t-ident");
    let mut datapath = Datapath::load_at(pins.root().clone())?;
    let mut events = datapath.events()?;
    let server = datapath.attach(&pods.server_interface())?;
    datapath.program(
        &server,
        &EndpointPolicy::default(),
        &[PodPair::SERVER_ADDRESS.into()],
        EndpointSettings::default(),
    )?;
    let reached = pods.client_reaches_server()?;
    let counters = datapath.counters(&server)?;
    let pending = tokio::time::timeout(std::time::Duration::from_millis(200), events.next()).await;
    eprintln!("reached {reached} counters {counters:?} event {pending:?} key {server:?}");
    assert!(reached);
    assert!(counters.ingress.allowed.packets > 0 && counters.egress.allowed.packets > 0);
    assert!(!matches!(pending, Ok(Ok(e)) if e.reason == Reason::NotProgrammed));
    Ok(())
}
