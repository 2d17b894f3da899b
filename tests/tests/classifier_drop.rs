//! Privileged: two network namespaces joined by a veth pair; the classifier attached inside
//! one of them drops what its map names, and nothing once it is detached.
use netwarden_agent::{datapath::Datapath, lab::topology::PodPair};

#[tokio::test]
async fn classifier_in_a_namespace_drops_a_denied_source_until_detached() -> anyhow::Result<()> {
    let pods = PodPair::create("t-drop")?;
    assert!(
        pods.client_reaches_server()?,
        "veth pair does not pass traffic before netwarden"
    );

    let mut datapath = Datapath::load()?;
    let attachment = datapath.attach(&pods.server_interface())?;
    assert!(
        pods.client_reaches_server()?,
        "an empty deny map must let traffic pass"
    );

    datapath.deny_source(PodPair::CLIENT_ADDRESS)?;
    assert!(
        !pods.client_reaches_server()?,
        "the classifier let a denied source through"
    );

    datapath.allow_source(PodPair::CLIENT_ADDRESS)?;
    assert!(
        pods.client_reaches_server()?,
        "removing the map entry did not restore traffic"
    );

    datapath.deny_source(PodPair::CLIENT_ADDRESS)?;
    assert!(!pods.client_reaches_server()?);
    datapath.detach(attachment)?;
    assert!(
        pods.client_reaches_server()?,
        "traffic still dropped after detach: the program is still attached"
    );
    Ok(())
}

#[tokio::test]
async fn attaching_to_what_is_not_there_names_it() -> anyhow::Result<()> {
    let pods = PodPair::create("t-missing")?;
    let mut datapath = Datapath::load()?;

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
