//! Privileged: enforcement outlives the datapath that set it up, and a new one adopts the
//! pinned links and maps: it changes the tables, and nothing is ever attached twice.
use aya::programs::{SchedClassifier, TcAttachType};
use netwarden_agent::{
    datapath::{
        pins::ScratchPinRoot,
        rules::{EndpointPolicy, Isolation, PeerBlock, Peers, Ports, Rule},
        Datapath, EndpointSettings, InterfaceTarget,
    },
    lab::topology::PodPair,
    netns,
};

fn deny_all() -> EndpointPolicy {
    EndpointPolicy {
        ingress: Isolation::Isolated(Vec::new()),
        ..EndpointPolicy::default()
    }
}

/// Programs attached with TCX on `target`, per hook.
fn tcx_programs(target: &InterfaceTarget) -> anyhow::Result<(usize, usize)> {
    let ifname = target.ifname.as_str();
    let count = netns::run_in(&target.netns, || -> anyhow::Result<(usize, usize)> {
        let ingress = SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)?
            .1
            .len();
        let egress = SchedClassifier::query_tcx(ifname, TcAttachType::Egress)?
            .1
            .len();
        Ok((ingress, egress))
    })??;
    Ok(count)
}

#[tokio::test]
async fn a_new_datapath_adopts_what_a_gone_one_attached() -> anyhow::Result<()> {
    let pods = PodPair::create("t-restart")?;
    let pins = ScratchPinRoot::create("t-restart");
    let target = pods.server_interface();
    let addresses = [PodPair::SERVER_ADDRESS.into()];
    let settings = EndpointSettings::default();

    let first = {
        let mut datapath = Datapath::load_at(pins.root().clone())?;
        let endpoint = datapath.attach(&target)?;
        datapath.program(&endpoint, &deny_all(), &addresses, settings)?;
        endpoint
        // Dropped here without detaching: the agent went away.
    };
    assert_eq!(tcx_programs(&target)?, (1, 1));
    assert!(
        !pods.client_reaches_server()?,
        "enforcement stopped with the datapath"
    );

    let mut datapath = Datapath::load_at(pins.root().clone())?;
    assert_eq!(pins.root().attached_endpoints()?, vec![first]);
    let config = datapath.endpoint_config(&first)?.expect("tables survived");
    let endpoint = datapath.attach(&target)?;
    assert_eq!(endpoint, first, "the same interface is the same endpoint");
    assert_eq!(tcx_programs(&target)?, (1, 1), "attached twice");
    assert!(!pods.client_reaches_server()?, "adoption opened a window");

    let allow_client = EndpointPolicy {
        ingress: Isolation::Isolated(vec![Rule {
            peers: Peers::Blocks(vec![PeerBlock::host(PodPair::CLIENT_ADDRESS.into())]),
            ports: Ports::Any,
        }]),
        ..EndpointPolicy::default()
    };
    let new_config = datapath.program(&endpoint, &allow_client, &addresses, settings)?;
    assert_eq!(new_config.id, config.id);
    assert_eq!(new_config.revision, config.revision + 1);
    assert!(
        pods.client_reaches_server()?,
        "the adopted tables did not change"
    );

    datapath.detach(&target)?;
    assert_eq!(tcx_programs(&target)?, (0, 0));
    assert!(pins.root().attached_endpoints()?.is_empty());
    Ok(())
}
