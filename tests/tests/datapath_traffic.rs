//! Privileged: real TCP and UDP between network namespaces, over a veth pair and over two
//! macvlans on one parent, through the attached classifiers (TCX links; on veth also
//! cls_bpf filters under clsact): allowed flows and their replies pass (the reverse
//! direction isolated), denied ones don't, a revoked rule cuts an established TCP
//! connection, denies arrive as events, and detaching leaves the interface as it was.
use std::{process::Stdio, time::Duration};

use netwarden_agent::{
    datapath::{
        pins::ScratchPinRoot,
        rules::{
            EndpointPolicy, Isolation, PeerBlock, Peers, PortMatch, PortRange, Ports, Protocol,
            Rule,
        },
        AttachMode, Datapath, DatapathEvent, EndpointSettings, Reason, VerdictEvents,
    },
    lab::topology::{NetNamespace, PodPair},
};
use netwarden_tests::hooks::{hooked, Hooked};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    time::timeout,
};

const CLIENT: &str = "198.18.0.1";
const SERVER: &str = "198.18.0.2";

/// A client and a server namespace, joined somehow, with the server's interface name.
struct Network {
    client: NetNamespace,
    server: NetNamespace,
    server_ifname: &'static str,
    _node: Option<NetNamespace>,
}

fn veth_network() -> anyhow::Result<Network> {
    let pods = PodPair::create("t-veth")?;
    Ok(Network {
        client: pods.client,
        server: pods.server,
        server_ifname: "eth0",
        _node: None,
    })
}

/// Two macvlans (bridge mode) on one parent veth end inside a "node" namespace.
fn macvlan_network() -> anyhow::Result<Network> {
    let node = NetNamespace::create("t-mv-node")?;
    let client = NetNamespace::create("t-mv-c")?;
    let server = NetNamespace::create("t-mv-s")?;
    node.exec(&[
        "ip", "link", "add", "parent0", "type", "veth", "peer", "name", "peer0",
    ])?;
    node.exec(&["ip", "link", "set", "parent0", "up"])?;
    node.exec(&["ip", "link", "set", "peer0", "up"])?;
    for (ns, name, address) in [(&client, "mvc", CLIENT), (&server, "mvs", SERVER)] {
        node.exec(&[
            "ip", "link", "add", name, "link", "parent0", "type", "macvlan", "mode", "bridge",
        ])?;
        node.exec(&["ip", "link", "set", name, "netns", ns.name()])?;
        ns.exec(&["ip", "addr", "add", &format!("{address}/24"), "dev", name])?;
        ns.exec(&["ip", "link", "set", name, "up"])?;
    }
    Ok(Network {
        client,
        server,
        server_ifname: "mvs",
        _node: Some(node),
    })
}

fn in_ns(ns: &NetNamespace, argv: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns.name()])
        .args(argv)
        .kill_on_drop(true);
    command
}

/// Echo servers, each in its own process group so that the connection handlers they fork
/// go with them on drop (a revoked connection never closes by itself).
struct EchoServers(Vec<Child>);

impl Drop for EchoServers {
    fn drop(&mut self) {
        for child in &self.0 {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

/// Echo servers on the server: TCP 5001 and 5003, UDP 5002 and 5004.
fn echo_servers(server: &NetNamespace) -> anyhow::Result<EchoServers> {
    let mut servers = EchoServers(Vec::new());
    for listen in [
        "TCP-LISTEN:5001,reuseaddr,fork",
        "TCP-LISTEN:5003,reuseaddr,fork",
        "UDP-RECVFROM:5002,fork",
        "UDP-RECVFROM:5004,fork",
    ] {
        let child = in_ns(server, &["socat", listen, "EXEC:cat"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        servers.0.push(child);
    }
    Ok(servers)
}

/// Whether a TCP connection to `port` is established within a second.
async fn tcp_connects(client: &NetNamespace, port: u16) -> anyhow::Result<bool> {
    let status = in_ns(
        client,
        &["ncat", "-z", "-w", "1", SERVER, &port.to_string()],
    )
    .stderr(Stdio::null())
    .status()
    .await?;
    Ok(status.success())
}

/// Whether a UDP datagram to `port` comes back echoed within a second.
async fn udp_echoes(client: &NetNamespace, port: u16) -> anyhow::Result<bool> {
    let mut child = in_ns(
        client,
        &["socat", "-T", "1", "-", &format!("UDP:{SERVER}:{port}")],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()?;
    child.stdin.take().unwrap().write_all(b"datagram\n").await?;
    let output = child.wait_with_output().await?;
    Ok(String::from_utf8_lossy(&output.stdout).contains("datagram"))
}

fn allow_client(port_matches: Vec<PortMatch>) -> EndpointPolicy {
    EndpointPolicy {
        ingress: Isolation::Isolated(vec![Rule {
            peers: Peers::Blocks(vec![PeerBlock::host(CLIENT.parse().unwrap())]),
            ports: Ports::Matches(port_matches),
        }]),
        // Egress isolated without rules: the server's replies pass only as tracked flows.
        egress: Isolation::Isolated(Vec::new()),
    }
}

fn port(protocol: Protocol, port: u16) -> PortMatch {
    PortMatch {
        protocol,
        ports: PortRange::single(port),
    }
}

async fn next_deny(
    events: &mut VerdictEvents,
    reason: Reason,
    dst_port: u16,
) -> anyhow::Result<DatapathEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow::anyhow!("no {reason:?} event for port {dst_port}"))??;
        if event.reason == reason && event.dst_port == dst_port {
            return Ok(event);
        }
    }
}

async fn policy_is_enforced_on(
    network: Network,
    mode: AttachMode,
    attached: Hooked,
) -> anyhow::Result<()> {
    let _servers = echo_servers(&network.server)?;
    let pins = ScratchPinRoot::create("t-traffic");
    let mut datapath = Datapath::load_at(pins.root().clone())?;
    datapath.set_attach_mode(mode);
    let mut events = datapath.events()?;
    let target = network.server.interface(&network.server_ifname.parse()?);
    let server = datapath.attach(&target)?;
    let hooks = || hooked(&network.server, network.server_ifname);
    assert_eq!(hooks(), attached);
    let addresses = [SERVER.parse()?];
    let settings = EndpointSettings::default();
    let full = allow_client(vec![port(Protocol::Tcp, 5001), port(Protocol::Udp, 5002)]);
    datapath.program(&server, &full, &addresses, settings)?;
    tokio::time::sleep(Duration::from_millis(200)).await; // the echo servers listen

    assert!(
        tcp_connects(&network.client, 5001).await?,
        "allowed TCP (reply through isolated egress)"
    );
    assert!(!tcp_connects(&network.client, 5003).await?, "denied TCP");
    let event = next_deny(&mut events, Reason::NoMatchingRule, 5003).await?;
    assert_eq!(event.src, Some(CLIENT.parse()?));
    assert!(
        udp_echoes(&network.client, 5002).await?,
        "allowed UDP and its reply"
    );
    assert!(!udp_echoes(&network.client, 5004).await?, "denied UDP");
    next_deny(&mut events, Reason::NoMatchingRule, 5004).await?;
    assert!(
        !network.server.ping(CLIENT)?,
        "denied egress (a flow the server starts)"
    );

    // An established connection, then the rule that admitted it goes away.
    let mut session = in_ns(
        &network.client,
        &["socat", "-", &format!("TCP:{SERVER}:5001")],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()?;
    let mut to_server = session.stdin.take().unwrap();
    let mut from_server = BufReader::new(session.stdout.take().unwrap()).lines();
    to_server.write_all(b"before\n").await?;
    let echoed = timeout(Duration::from_secs(2), from_server.next_line()).await??;
    assert_eq!(
        echoed.as_deref(),
        Some("before"),
        "established session echoes"
    );

    let udp_only = allow_client(vec![port(Protocol::Udp, 5002)]);
    datapath.program(&server, &udp_only, &addresses, settings)?;
    to_server.write_all(b"after\n").await?;
    let after = timeout(Duration::from_millis(1500), from_server.next_line()).await;
    assert!(
        after.is_err(),
        "the revoked connection still carried data: {after:?}"
    );
    next_deny(&mut events, Reason::Revoked, 5001).await?;
    assert!(
        udp_echoes(&network.client, 5002).await?,
        "the rule still in place keeps working"
    );
    let counters = datapath.counters(&server)?;
    assert!(
        counters.ingress.denied.packets >= 3 && counters.egress.allowed.packets > 0,
        "{counters:?}"
    );
    datapath.detach(&target)?;
    assert_eq!(hooks(), Hooked::nothing());
    Ok(())
}

#[tokio::test]
async fn policy_is_enforced_on_real_traffic_over_veth() -> anyhow::Result<()> {
    policy_is_enforced_on(veth_network()?, AttachMode::Auto, Hooked::tcx()).await
}

#[tokio::test]
async fn policy_is_enforced_on_real_traffic_over_veth_with_cls_bpf() -> anyhow::Result<()> {
    policy_is_enforced_on(veth_network()?, AttachMode::Clsact, Hooked::cls_bpf()).await
}

#[tokio::test]
async fn policy_is_enforced_on_real_traffic_over_macvlan() -> anyhow::Result<()> {
    policy_is_enforced_on(macvlan_network()?, AttachMode::Auto, Hooked::tcx()).await
}
