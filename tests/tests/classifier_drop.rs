//! Privileged: two network namespaces joined by a veth pair; the classifiers attached inside
//! one of them drop what its policy does not allow, and nothing once detached.
use netwarden_agent::{
    datapath::{
        pins::ScratchPinRoot,
        rules::{EndpointPolicy, Isolation, PeerBlock, Peers, Ports, Rule},
        Datapath, EndpointSettings,
    },
    lab::topology::PodPair,
};

#[tokio::test]
async fn classifier_in_a_namespace_drops_what_policy_denies_until_detached() -> anyhow::Result<()> {
    let pods = PodPair::create("t-drop")?;
    assert!(
        pods.client_reaches_server()?,
        "veth pair does not pass traffic before netwarden"
    );
    let pins = ScratchPinRoot::create("t-drop");
    let mut datapath = Datapath::load_at(pins.root().clone())?;
    let server = datapath.attach(&pods.server_interface())?;
    assert!(
        !pods.client_reaches_server()?,
        "an attached but unprogrammed interface must drop (fail closed)"
    );
    let addresses = [PodPair::SERVER_ADDRESS.into()];
    let settings = EndpointSettings::default();
    datapath.program(&server, &EndpointPolicy::default(), &addresses, settings)?;
    assert!(pods.client_reaches_server()?, "an open endpoint must pass");

    let deny_all = EndpointPolicy {
        ingress: Isolation::Isolated(Vec::new()),
        ..EndpointPolicy::default()
    };
    datapath.program(&server, &deny_all, &addresses, settings)?;
    assert!(
        !pods.client_reaches_server()?,
        "isolated without rules let the client through"
    );

    let allow_client = EndpointPolicy {
        ingress: Isolation::Isolated(vec![Rule {
            peers: Peers::Blocks(vec![PeerBlock::host(PodPair::CLIENT_ADDRESS.into())]),
            ports: Ports::Any,
        }]),
        ..EndpointPolicy::default()
    };
    datapath.program(&server, &allow_client, &addresses, settings)?;
    assert!(
        pods.client_reaches_server()?,
        "the rule for the client did not let it through"
    );

    datapath.program(&server, &deny_all, &addresses, settings)?;
    datapath.detach(&pods.server_interface())?;
    assert!(
        pods.client_reaches_server()?,
        "traffic still dropped after detach: the program is still attached"
    );
    Ok(())
}

#[tokio::test]
async fn attaching_to_what_is_not_there_names_it() -> anyhow::Result<()> {
    let pods = PodPair::create("t-missing")?;
    let pins = ScratchPinRoot::create("t-missing");
    let mut datapath = Datapath::load_at(pins.root().clone())?;

    let mut no_namespace = pods.server_interface();
    no_namespace.netns = "/run/netns/nw-does-not-exist".into();
    let error = datapath.attach(&no_namespace).unwrap_err().to_string();
    assert!(
        error.contains("/run/netns/nw-does-not-exist"),
        "error does not name the namespace: {error}"
    );

    let mut no_interface = pods.server_interface();
    no_interface.ifname = "nosuch0".parse()?;
    let error = datapath.attach(&no_interface).unwrap_err().to_string();
    assert!(
        error.contains("nosuch0") && error.contains(pods.server.name()),
        "error does not name the interface and its namespace: {error}"
    );
    Ok(())
}
