//! Privileged: the classifiers' verdicts on crafted frames, run in the kernel with
//! BPF_PROG_TEST_RUN against tables the agent programmed: every protocol branch, IPv4
//! options and fragments, IPv6 extension headers, truncated headers, SCTP, spoofed
//! sources, except-carved prefixes, port ranges at their edges, unprogrammed endpoints.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use etherparse::PacketBuilder;
use ipnet::IpNet;
use netwarden_agent::datapath::{
    pins::ScratchPinRoot,
    rules::{
        EndpointPolicy, Isolation, PeerBlock, Peers, PortMatch, PortRange, Ports, Protocol, Rule,
    },
    Datapath, EndpointKey, EndpointSettings, Hook, Reason, Reference, Verdict, VerdictEvents,
};

const POD: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const POD6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const CARVED: Ipv4Addr = Ipv4Addr::new(10, 0, 5, 1);
const CARVED_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 5, 7);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ports(protocol: Protocol, first: u16, last: u16) -> PortMatch {
    PortMatch {
        protocol,
        ports: PortRange { first, last },
    }
}

/// Ingress: 10.0.0.0/16 except 10.0.5.0/24 on TCP 8000-8080, UDP 53, SCTP 3868; the
/// host 10.0.5.7 (inside the carved-out range) on everything; 2001:db8::/32 on TCP 443.
/// Egress: anyone on TCP 80.
fn policy() -> EndpointPolicy {
    EndpointPolicy {
        ingress: Isolation::Isolated(vec![
            Rule {
                peers: Peers::Blocks(vec![PeerBlock {
                    cidr: net("10.0.0.0/16"),
                    except: vec![net("10.0.5.0/24")],
                }]),
                ports: Ports::Matches(vec![
                    ports(Protocol::Tcp, 8000, 8080),
                    ports(Protocol::Udp, 53, 53),
                    ports(Protocol::Sctp, 3868, 3868),
                ]),
            },
            Rule {
                peers: Peers::Blocks(vec![PeerBlock::host(CARVED_HOST.into())]),
                ports: Ports::Any,
            },
            Rule {
                peers: Peers::Blocks(vec![PeerBlock {
                    cidr: net("2001:db8::/32"),
                    except: vec![],
                }]),
                ports: Ports::Matches(vec![ports(Protocol::Tcp, 443, 443)]),
            },
        ]),
        egress: Isolation::Isolated(vec![Rule {
            peers: Peers::Any,
            ports: Ports::Matches(vec![ports(Protocol::Tcp, 80, 80)]),
        }]),
    }
}

/// A datapath with its own pins and one programmed endpoint (no interface needed: the
/// endpoint key is compiled into the program instance a test run uses).
struct Fixture {
    datapath: Datapath,
    events: VerdictEvents,
    endpoint: EndpointKey,
    _pins: ScratchPinRoot,
}

impl Fixture {
    fn new(policy: &EndpointPolicy) -> anyhow::Result<Self> {
        let pins = ScratchPinRoot::create("t-verdict");
        let mut datapath = Datapath::load_at(pins.root().clone())?;
        let events = datapath.events()?;
        let endpoint = EndpointKey {
            netns_cookie: 0x5eed,
            ifindex: 7,
            _pad: 0,
        };
        datapath.program(
            &endpoint,
            policy,
            &[POD.into(), POD6.into()],
            EndpointSettings::default(),
        )?;
        Ok(Self {
            datapath,
            events,
            endpoint,
            _pins: pins,
        })
    }

    /// The verdict, and for a deny the reason its event gives.
    async fn judge(
        &mut self,
        hook: Hook,
        frame: &[u8],
    ) -> anyhow::Result<(Verdict, Option<Reason>)> {
        let outcome = self
            .datapath
            .test_run(hook, &self.endpoint, frame, 1)
            .map_err(|e| {
                anyhow::anyhow!("{e:#} on a frame of {} bytes: {frame:02x?}", frame.len())
            })?;
        let verdict = outcome
            .verdict()
            .expect("the classifiers return OK or SHOT");
        if verdict == Verdict::Allow {
            return Ok((verdict, None));
        }
        let event = tokio::time::timeout(Duration::from_secs(1), self.events.next()).await??;
        Ok((verdict, Some(event.reason)))
    }

    async fn allows(&mut self, hook: Hook, frame: &[u8]) -> bool {
        self.judge(hook, frame).await.unwrap().0 == Verdict::Allow
    }

    async fn denies_for(&mut self, hook: Hook, frame: &[u8]) -> Option<Reason> {
        self.judge(hook, frame).await.unwrap().1
    }
}

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 1024)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut frame, b"query")
        .unwrap();
    frame
}

fn ping4(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(id, 1)
        .write(&mut frame, b"ping")
        .unwrap();
    frame
}

fn tcp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 1024)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

fn ethernet(ether_type: u16) -> Vec<u8> {
    let mut frame = [MAC_B, MAC_A].concat();
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame
}

/// An IPv4 frame written by hand: options, fragment offset, lengths as given.
fn raw4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    options: &[u8],
    frag: u16,
    l4: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + l4.len()) as u16;
    let mut frame = ethernet(0x0800);
    frame.push(0x40 | ihl as u8);
    frame.push(0);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&[0, 1]);
    frame.extend_from_slice(&frag.to_be_bytes());
    frame.extend_from_slice(&[64, protocol, 0, 0]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(options);
    frame.extend_from_slice(l4);
    frame
}

/// An IPv6 frame written by hand: `headers` are (next header, bytes) extension headers.
fn raw6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    headers: &[(u8, Vec<u8>)],
    protocol: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut first = protocol;
    for (i, (kind, bytes)) in headers.iter().enumerate() {
        if i == 0 {
            first = *kind;
        }
        let next = headers.get(i + 1).map_or(protocol, |h| h.0);
        let mut header = bytes.clone();
        header[0] = next;
        payload.extend_from_slice(&header);
    }
    payload.extend_from_slice(l4);
    let mut frame = ethernet(0x86dd);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[first, 64]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(&payload);
    frame
}

/// Source and destination port, then zeros up to `len` bytes (a transport header).
fn l4_ports(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut bytes = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
    bytes.resize(len, 0);
    bytes
}

fn options8() -> Vec<u8> {
    vec![0, 0, 0, 0, 0, 0, 0, 0]
}

fn fragment(offset: u16) -> Vec<u8> {
    let mut header = vec![0, 0];
    header.extend_from_slice(&(offset << 3).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 1]);
    header
}

#[tokio::test]
async fn tcp_udp_and_sctp_ports_are_allowed_exactly_at_their_range_edges() -> anyhow::Result<()> {
    let mut f = Fixture::new(&policy())?;
    for (port, allowed) in [(7999, false), (8000, true), (8080, true), (8081, false)] {
        assert_eq!(
            f.allows(Hook::Ingress, &tcp4(PEER, POD, 40000 + port, port))
                .await,
            allowed,
            "TCP {port}"
        );
    }
    assert!(f.allows(Hook::Ingress, &udp4(PEER, POD, 5353, 53)).await);
    assert_eq!(
        f.denies_for(Hook::Ingress, &udp4(PEER, POD, 5353, 54))
            .await,
        Some(Reason::NoMatchingRule)
    );
    let sctp = |dport| raw4(PEER, POD, SCTP, &[], 0, &l4_ports(3000, dport, 16));
    assert!(f.allows(Hook::Ingress, &sctp(3868)).await, "SCTP 3868");
    assert!(!f.allows(Hook::Ingress, &sctp(3869)).await, "SCTP 3869");
    assert!(
        !f.allows(Hook::Ingress, &udp4(STRANGER, POD, 5353, 53))
            .await,
        "peer outside every rule"
    );
    Ok(())
}

#[tokio::test]
async fn except_carves_a_prefix_that_another_rule_can_still_allow() -> anyhow::Result<()> {
    let mut f = Fixture::new(&policy())?;
    assert_eq!(
        f.denies_for(Hook::Ingress, &tcp4(CARVED, POD, 40001, 8000))
            .await,
        Some(Reason::NoMatchingRule)
    );
    assert!(
        f.allows(Hook::Ingress, &tcp4(CARVED_HOST, POD, 40002, 1))
            .await,
        "host rule inside the except"
    );
    assert!(
        f.allows(Hook::Ingress, &ping4(CARVED_HOST, POD, 7)).await,
        "all-ports rule admits ICMP"
    );
    assert!(
        !f.allows(Hook::Ingress, &ping4(PEER, POD, 8)).await,
        "a ports rule never admits ICMP"
    );
    Ok(())
}

#[tokio::test]
async fn ipv4_options_and_fragments() -> anyhow::Result<()> {
    let mut f = Fixture::new(&policy())?;
    let with_options = raw4(PEER, POD, TCP, &options8(), 0, &l4_ports(40003, 8000, 20));
    assert!(
        f.allows(Hook::Ingress, &with_options).await,
        "options are skipped"
    );
    // A later fragment has no ports: only an all-ports rule admits it.
    let later = |src| raw4(src, POD, TCP, &[], 185, &[0; 24]);
    assert!(!f.allows(Hook::Ingress, &later(PEER)).await);
    assert!(f.allows(Hook::Ingress, &later(CARVED_HOST)).await);
    // A first fragment (more-fragments set, offset 0) carries the ports.
    let first = raw4(PEER, POD, TCP, &[], 0x2000, &l4_ports(40004, 8000, 20));
    assert!(f.allows(Hook::Ingress, &first).await);
    Ok(())
}

#[tokio::test]
async fn ipv6_extension_headers_are_walked_up_to_eight() -> anyhow::Result<()> {
    let mut f = Fixture::new(&policy())?;
    assert!(
        f.allows(Hook::Ingress, &tcp6(PEER6, POD6, 40005, 443))
            .await
    );
    assert!(
        !f.allows(Hook::Ingress, &tcp6(PEER6, POD6, 40006, 444))
            .await
    );
    let options = || vec![0, 0, 1, 4, 0, 0, 0, 0];
    let chain = |n: usize, sport| {
        let headers: Vec<(u8, Vec<u8>)> = (0..n)
            .map(|i| (if i == 0 { 0 } else { 60 }, options()))
            .collect();
        raw6(PEER6, POD6, &headers, TCP, &l4_ports(sport, 443, 20))
    };
    assert!(
        f.allows(Hook::Ingress, &chain(2, 40007)).await,
        "hop-by-hop + destination options"
    );
    assert!(
        f.allows(Hook::Ingress, &chain(8, 40008)).await,
        "eight headers"
    );
    assert_eq!(
        f.denies_for(Hook::Ingress, &chain(9, 40009)).await,
        Some(Reason::Malformed)
    );
    let ah = vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    let with_ah = raw6(PEER6, POD6, &[(51, ah)], TCP, &l4_ports(40010, 443, 20));
    assert!(
        f.allows(Hook::Ingress, &with_ah).await,
        "authentication header"
    );
    let first = raw6(
        PEER6,
        POD6,
        &[(44, fragment(0))],
        TCP,
        &l4_ports(40011, 443, 20),
    );
    assert!(
        f.allows(Hook::Ingress, &first).await,
        "first fragment has the ports"
    );
    let later = raw6(PEER6, POD6, &[(44, fragment(100))], TCP, &[0; 16]);
    assert!(
        !f.allows(Hook::Ingress, &later).await,
        "later fragment is portless"
    );
    Ok(())
}

#[tokio::test]
async fn truncated_and_broken_headers_are_malformed_when_isolated() -> anyhow::Result<()> {
    let mut f = Fixture::new(&policy())?;
    let cases = [
        (
            "TCP header of 10 bytes",
            raw4(PEER, POD, TCP, &[], 0, &l4_ports(40012, 8000, 10)),
        ),
        (
            "UDP header of 6 bytes",
            raw4(PEER, POD, UDP, &[], 0, &l4_ports(40013, 53, 6)),
        ),
        (
            "SCTP header of 8 bytes",
            raw4(PEER, POD, SCTP, &[], 0, &l4_ports(40014, 3868, 8)),
        ),
        (
            "ICMP header of 4 bytes",
            raw4(CARVED_HOST, POD, 1, &[], 0, &[8, 0, 0, 0]),
        ),
        (
            "IPv6 TCP of 12 bytes",
            raw6(PEER6, POD6, &[], TCP, &l4_ports(40015, 443, 12)),
        ),
    ];
    for (what, frame) in cases {
        assert_eq!(
            f.denies_for(Hook::Ingress, &frame).await,
            Some(Reason::Malformed),
            "{what}"
        );
    }
    let mut ihl4 = raw4(PEER, POD, TCP, &[], 0, &l4_ports(40016, 8000, 20));
    ihl4[14] = 0x44;
    assert_eq!(
        f.denies_for(Hook::Ingress, &ihl4).await,
        Some(Reason::Malformed),
        "IHL 4"
    );
    let mut long = raw4(PEER, POD, TCP, &[], 0, &l4_ports(40017, 8000, 20));
    long[16..18].copy_from_slice(&1500u16.to_be_bytes());
    assert_eq!(
        f.denies_for(Hook::Ingress, &long).await,
        Some(Reason::Malformed),
        "total length past the frame"
    );
    // (The kernel's test run refuses an IPv4 frame shorter than an IPv4 header itself.)
    let mut version5 = raw4(PEER, POD, TCP, &[], 0, &l4_ports(40018, 8000, 20));
    version5[14] = 0x55;
    assert_eq!(
        f.denies_for(Hook::Ingress, &version5).await,
        Some(Reason::Malformed),
        "IP version 5"
    );
    let vlan = [ethernet(0x8100), vec![0, 1, 8, 0]].concat();
    assert_eq!(
        f.denies_for(Hook::Ingress, &vlan).await,
        Some(Reason::Malformed),
        "VLAN tag"
    );
    Ok(())
}

#[tokio::test]
async fn open_directions_pass_what_they_cannot_parse() -> anyhow::Result<()> {
    let mut f = Fixture::new(&EndpointPolicy::default())?;
    let vlan = [ethernet(0x8100), vec![0, 1, 8, 0]].concat();
    assert!(f.allows(Hook::Ingress, &vlan).await, "VLAN tag");
    assert!(
        f.allows(
            Hook::Ingress,
            &raw4(PEER, POD, TCP, &[], 0, &l4_ports(1, 2, 10))
        )
        .await
    );
    assert!(
        f.allows(Hook::Ingress, &tcp4(STRANGER, POD, 40018, 9))
            .await
    );
    Ok(())
}

#[tokio::test]
async fn arp_and_neighbour_discovery_always_pass() -> anyhow::Result<()> {
    let mut f = Fixture::new(&policy())?;
    let mut arp = ethernet(0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    assert!(f.allows(Hook::Ingress, &arp).await);
    assert!(f.allows(Hook::Egress, &arp).await);
    for kind in 133..=137u8 {
        let stranger = "2001:db9::1".parse()?;
        let ndp = raw6(
            stranger,
            POD6,
            &[],
            58,
            &[kind, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        assert!(f.allows(Hook::Ingress, &ndp).await, "NDP type {kind}");
    }
    let echo = raw6(
        "2001:db9::1".parse()?,
        POD6,
        &[],
        58,
        &[128, 0, 0, 0, 0, 1, 0, 1],
    );
    assert!(
        !f.allows(Hook::Ingress, &echo).await,
        "ICMPv6 echo is not NDP"
    );
    Ok(())
}

#[tokio::test]
async fn egress_sources_must_be_the_endpoint_s_own() -> anyhow::Result<()> {
    let mut f = Fixture::new(&policy())?;
    assert!(
        f.allows(Hook::Egress, &tcp4(POD, STRANGER, 40019, 80))
            .await
    );
    assert_eq!(
        f.denies_for(Hook::Egress, &tcp4(POD, STRANGER, 40020, 81))
            .await,
        Some(Reason::NoMatchingRule)
    );
    let spoofed = Ipv4Addr::new(10, 1, 0, 3);
    assert_eq!(
        f.denies_for(Hook::Egress, &tcp4(spoofed, STRANGER, 40021, 80))
            .await,
        Some(Reason::SpoofedSource)
    );
    assert!(f.allows(Hook::Egress, &tcp6(POD6, PEER6, 40022, 80)).await);
    let link_local = "fe80::1".parse()?;
    assert!(
        f.allows(Hook::Egress, &tcp6(link_local, PEER6, 40023, 80))
            .await,
        "link-local is exempt"
    );
    let other6 = "2001:db8:1::3".parse()?;
    assert_eq!(
        f.denies_for(Hook::Egress, &tcp6(other6, PEER6, 40024, 80))
            .await,
        Some(Reason::SpoofedSource)
    );
    Ok(())
}

#[tokio::test]
async fn replies_pass_and_a_revoked_rule_stops_a_tracked_flow() -> anyhow::Result<()> {
    let mut f = Fixture::new(&policy())?;
    // Egress only allows TCP 80: the reply passes because the flow is tracked.
    assert!(f.allows(Hook::Ingress, &tcp4(PEER, POD, 40025, 8000)).await);
    assert!(
        f.allows(Hook::Egress, &tcp4(POD, PEER, 8000, 40025)).await,
        "reply"
    );
    assert!(
        !f.allows(Hook::Egress, &tcp4(POD, PEER, 8000, 40026)).await,
        "not a reply"
    );
    let echo = ping4(CARVED_HOST, POD, 99);
    assert!(f.allows(Hook::Ingress, &echo).await);
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(MAC_B, MAC_A)
        .ipv4(POD.octets(), CARVED_HOST.octets(), 64)
        .icmpv4_echo_reply(99, 1)
        .write(&mut reply, b"ping")?;
    assert!(f.allows(Hook::Egress, &reply).await, "echo reply");

    // The same policy again (new revision): flows still allowed never see a drop.
    let endpoint = f.endpoint;
    let addresses: [IpAddr; 2] = [POD.into(), POD6.into()];
    f.datapath.program(
        &endpoint,
        &policy(),
        &addresses,
        EndpointSettings::default(),
    )?;
    assert!(f.allows(Hook::Egress, &tcp4(POD, PEER, 8000, 40025)).await);

    // Without the first rule, the tracked TCP flow is revoked on its next packet.
    let mut narrowed = policy();
    if let Isolation::Isolated(rules) = &mut narrowed.ingress {
        rules.remove(0);
    }
    f.datapath.program(
        &endpoint,
        &narrowed,
        &addresses,
        EndpointSettings::default(),
    )?;
    assert_eq!(
        f.denies_for(Hook::Egress, &tcp4(POD, PEER, 8000, 40025))
            .await,
        Some(Reason::Revoked)
    );
    assert!(
        f.allows(Hook::Egress, &reply).await,
        "the ICMP flow is still allowed"
    );
    Ok(())
}

#[tokio::test]
async fn an_unprogrammed_or_forgotten_endpoint_drops_everything() -> anyhow::Result<()> {
    let mut f = Fixture::new(&EndpointPolicy::default())?;
    let other = EndpointKey {
        netns_cookie: 0x5eed,
        ifindex: 8,
        _pad: 0,
    };
    let frame = tcp4(PEER, POD, 40027, 8000);
    let outcome = f.datapath.test_run(Hook::Ingress, &other, &frame, 1)?;
    assert_eq!(outcome.verdict(), Some(Verdict::Deny));
    assert!(f.allows(Hook::Ingress, &frame).await);
    let endpoint = f.endpoint;
    f.datapath.forget(&endpoint)?;
    let outcome = f.datapath.test_run(Hook::Ingress, &endpoint, &frame, 1)?;
    assert_eq!(
        outcome.verdict(),
        Some(Verdict::Deny),
        "a forgotten endpoint keeps no tables"
    );
    let counters_error = f.datapath.counters(&endpoint).unwrap_err().to_string();
    assert!(
        counters_error.contains("not programmed"),
        "{counters_error}"
    );
    Ok(())
}

#[tokio::test]
async fn allowed_new_flows_are_reported_on_request_and_established_ones_never() -> anyhow::Result<()>
{
    let mut f = Fixture::new(&policy())?;
    let endpoint = f.endpoint;
    let settings = EndpointSettings {
        anti_spoof: true,
        report_allows: true,
    };
    f.datapath
        .program(&endpoint, &policy(), &[POD.into(), POD6.into()], settings)?;
    let first = tcp4(PEER, POD, 40030, 8000);
    assert!(f.allows(Hook::Ingress, &first).await);
    let event = tokio::time::timeout(Duration::from_secs(1), f.events.next()).await??;
    assert_eq!(
        (event.verdict, event.reason),
        (Verdict::Allow, Reason::Rule)
    );
    assert_eq!((event.src, event.dst_port), (Some(PEER.into()), 8000));
    assert!(f.allows(Hook::Ingress, &first).await, "established");
    assert_eq!(
        f.denies_for(Hook::Ingress, &tcp4(STRANGER, POD, 40031, 8000))
            .await,
        Some(Reason::NoMatchingRule),
        "the next event is the deny: the established packet sent none"
    );
    Ok(())
}

#[tokio::test]
async fn the_benchmark_reference_programs_do_only_their_map_work_and_miss() -> anyhow::Result<()> {
    let mut f = Fixture::new(&policy())?;
    let v4 = tcp4(PEER, POD, 40040, 8000);
    let v6 = tcp6(PEER6, POD6, 40041, 443);
    assert!(f.allows(Hook::Ingress, &v4).await, "now a tracked flow");
    assert!(f.allows(Hook::Ingress, &v6).await, "now a tracked flow");
    // The admission last: it inserts the flow its lookups looked for.
    let references = [
        Reference::Passthrough,
        Reference::FlowLookup,
        Reference::NewFlowLookups,
        Reference::NewFlowAdmission,
    ];
    for reference in references {
        for frame in [&v4, &v6] {
            let outcome = f.datapath.test_run_reference(reference, frame, 1)?;
            assert_eq!(
                outcome.verdict(),
                Some(Verdict::Allow),
                "{reference:?}: the endpoint's own flow and tables must not answer it"
            );
        }
    }
    let again = f
        .datapath
        .test_run_reference(Reference::NewFlowAdmission, &v4, 1)?;
    assert_eq!(
        again.verdict(),
        Some(Verdict::Deny),
        "the admission's insert is real: its own flow lookup now finds it"
    );
    // The lookups need the ports: a frame that ends before them has none, and the lookup
    // programs say so (TC_ACT_UNSPEC) instead of timing nothing.
    let bare = raw4(PEER, POD, TCP, &[], 0, &[0x9c, 0x40]);
    for reference in references.into_iter().skip(1) {
        let outcome = f.datapath.test_run_reference(reference, &bare, 1)?;
        assert_eq!(outcome.return_value, u32::MAX, "{reference:?}");
    }
    let outcome = f
        .datapath
        .test_run_reference(Reference::Passthrough, &bare, 1)?;
    assert_eq!(outcome.verdict(), Some(Verdict::Allow));
    assert!(
        f.allows(Hook::Ingress, &v4).await,
        "the endpoint's flow is still tracked"
    );
    Ok(())
}
