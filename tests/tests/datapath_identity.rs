//! Privileged: real packets on both hooks of a pod interface find the endpoint the agent
//! programmed under the key it computed in userspace (SO_NETNS_COOKIE and ifindex read in
//! the pod's namespace): nothing is dropped as "not programmed".
use std::time::Duration;

use netwarden_agent::{
    datapath::{
        endpoint_key, pins::ScratchPinRoot, rules::EndpointPolicy, Datapath, EndpointSettings,
        Reason,
    },
    lab::topology::PodPair,
};

#[tokio::test]
async fn both_hooks_see_the_endpoint_the_agent_keyed() -> anyhow::Result<()> {
    let pods = PodPair::create("t-ident")?;
    let pins = ScratchPinRoot::create("t-ident");
    let mut datapath = Datapath::load_at(pins.root().clone())?;
    let mut events = datapath.events()?;
    let server = datapath.attach(&pods.server_interface())?;
    assert_eq!(server, endpoint_key(&pods.server_interface())?);
    assert_ne!(
        server.netns_cookie,
        endpoint_key(&pods.client.interface(&pods.ifname))?.netns_cookie,
        "two namespaces, one cookie"
    );
    datapath.program(
        &server,
        &EndpointPolicy::default(),
        &[PodPair::SERVER_ADDRESS.into()],
        EndpointSettings::default(),
    )?;
    assert!(pods.client_reaches_server()?);
    let counters = datapath.counters(&server)?;
    assert!(counters.ingress.allowed.packets > 0, "{counters:?}");
    assert!(counters.egress.allowed.packets > 0, "{counters:?}");
    let event = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(
        !matches!(&event, Ok(Ok(e)) if e.reason == Reason::NotProgrammed),
        "a packet missed its endpoint: {event:?}"
    );
    Ok(())
}
