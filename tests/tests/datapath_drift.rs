//! Privileged: the drift check the agent's reconcile runs. Another process changes the
//! pinned tables behind the datapath's back (an entry added to the live or the idle
//! generation, one deleted, an address dropped, flags flipped, entries under an id no
//! interface holds); each change is real (BPF_PROG_TEST_RUN verdicts move with it), each is
//! found, and programming the endpoint again (what the reconcile does) puts it right.
use std::net::{IpAddr, Ipv4Addr};

use etherparse::PacketBuilder;
use netwarden_agent::datapath::{
    pins::ScratchPinRoot,
    rules::{
        EndpointPolicy, Isolation, PeerBlock, Peers, PortMatch, PortRange, Ports, Protocol, Rule,
    },
    Datapath, Drift, EndpointKey, EndpointSettings, Hook, TableSnapshot, Verdict,
};
use netwarden_common::{endpoint_flags, AddressKey, EndpointConfig, PeerKey};
use netwarden_tests::tamper::PinnedTables;

const POD: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

/// Ingress from PEER on TCP 80; egress open.
fn policy() -> EndpointPolicy {
    EndpointPolicy {
        ingress: Isolation::Isolated(vec![Rule {
            peers: Peers::Blocks(vec![PeerBlock::host(PEER.into())]),
            ports: Ports::Matches(vec![PortMatch {
                protocol: Protocol::Tcp,
                ports: PortRange {
                    first: 80,
                    last: 80,
                },
            }]),
        }]),
        egress: Isolation::Open,
    }
}

fn addr16(address: Ipv4Addr) -> [u8; 16] {
    address.to_ipv6_mapped().octets()
}

fn syn(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), POD.octets(), 64)
        .tcp(sport, 80, 1, 1024)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

struct Fixture {
    datapath: Datapath,
    endpoint: EndpointKey,
    tables: PinnedTables,
    /// Source ports for SYNs: each judged as a new flow.
    next_port: u16,
    _pins: ScratchPinRoot,
}

impl Fixture {
    fn new() -> Self {
        let pins = ScratchPinRoot::create("t-drift");
        let datapath = Datapath::load_at(pins.root().clone()).expect("datapath loads");
        let tables = PinnedTables::new(pins.root());
        let mut fixture = Self {
            datapath,
            endpoint: EndpointKey {
                netns_cookie: 0xd71f7,
                ifindex: 3,
                _pad: 0,
            },
            tables,
            next_port: 40000,
            _pins: pins,
        };
        fixture.reprogram();
        fixture
    }

    /// What the reconcile does for a drifted endpoint.
    fn reprogram(&mut self) {
        self.datapath
            .program(
                &self.endpoint,
                &policy(),
                &[IpAddr::V4(POD)],
                EndpointSettings::default(),
            )
            .expect("programmed");
    }

    fn drift(&mut self) -> Vec<Drift> {
        let snapshot = TableSnapshot::read(self.datapath.pins()).expect("snapshot");
        self.datapath
            .drift(
                &snapshot,
                &self.endpoint,
                &policy(),
                &[IpAddr::V4(POD)],
                EndpointSettings::default(),
            )
            .expect("drift check")
    }

    fn config(&mut self) -> EndpointConfig {
        self.datapath
            .endpoint_config(&self.endpoint)
            .expect("config")
            .expect("programmed")
    }

    fn admits(&mut self, src: Ipv4Addr) -> bool {
        self.next_port += 1;
        let outcome = self
            .datapath
            .test_run(Hook::Ingress, &self.endpoint, &syn(src, self.next_port), 1)
            .expect("test run");
        outcome.verdict() == Some(Verdict::Allow)
    }

    /// PEER's `PEER_HOSTS` entry in the live generation, re-keyed to `addr` in
    /// `generation`.
    fn add_host(&mut self, addr: Ipv4Addr, generation: u8) {
        let (key, value) = self.live_peer_entry();
        let stale = PeerKey {
            generation,
            addr: addr16(addr),
            ..key
        };
        self.tables
            .peer_hosts()
            .insert(stale, value, 0)
            .expect("entry added");
    }

    fn live_peer_entry(&mut self) -> (PeerKey, netwarden_common::PeerValue) {
        let config = self.config();
        self.tables
            .peer_host_entries()
            .into_iter()
            .find(|(key, _)| {
                key.endpoint == config.id
                    && u32::from(key.generation) == config.generation
                    && key.addr == addr16(PEER)
            })
            .expect("PEER's live entry")
    }
}

#[tokio::test]
async fn an_endpoint_programmed_again_and_again_is_in_step() {
    let mut fixture = Fixture::new();
    for _ in 0..3 {
        assert_eq!(fixture.drift(), vec![]);
        fixture.reprogram();
    }
    assert!(fixture.admits(PEER));
    assert!(!fixture.admits(STRANGER));
}

#[tokio::test]
async fn an_entry_added_to_the_live_generation_is_found_and_removed() {
    let mut fixture = Fixture::new();
    let live = fixture.config().generation as u8;
    fixture.add_host(STRANGER, live);
    assert!(fixture.admits(STRANGER), "the added entry had no effect");
    assert_eq!(fixture.drift(), vec![Drift::LiveTables]);
    fixture.reprogram();
    assert!(
        !fixture.admits(STRANGER),
        "the rewrite kept the added entry"
    );
    assert!(fixture.admits(PEER));
    assert_eq!(fixture.drift(), vec![]);
}

#[tokio::test]
async fn an_entry_added_to_the_idle_generation_never_goes_live() {
    let mut fixture = Fixture::new();
    let idle = fixture.config().generation as u8 ^ 1;
    fixture.add_host(STRANGER, idle);
    assert!(!fixture.admits(STRANGER));
    assert_eq!(fixture.drift(), vec![Drift::IdleTables]);
    // The rewrite fills the idle generation and makes it live: it must start empty.
    fixture.reprogram();
    assert_eq!(fixture.config().generation as u8, idle);
    assert!(!fixture.admits(STRANGER), "the idle entry went live");
    assert!(fixture.admits(PEER));
    assert_eq!(fixture.drift(), vec![]);
}

#[tokio::test]
async fn a_deleted_entry_is_found_and_restored() {
    let mut fixture = Fixture::new();
    let (key, _) = fixture.live_peer_entry();
    fixture.tables.peer_hosts().remove(&key).expect("removed");
    assert!(!fixture.admits(PEER), "the deletion had no effect");
    assert_eq!(fixture.drift(), vec![Drift::LiveTables]);
    fixture.reprogram();
    assert!(
        fixture.admits(PEER),
        "the rewrite did not restore the entry"
    );
    assert_eq!(fixture.drift(), vec![]);
}

#[tokio::test]
async fn a_dropped_address_and_flipped_flags_are_found_and_restored() {
    let mut fixture = Fixture::new();
    let config = fixture.config();
    let address = AddressKey {
        endpoint: config.id,
        addr: addr16(POD),
    };
    fixture
        .tables
        .addresses()
        .remove(&address)
        .expect("address removed");
    // The slot's flags without ingress isolation: everything would be let in.
    let mut endpoints = fixture.tables.endpoints();
    let mut slot = endpoints.get(&config.id, 0).expect("slot");
    let open = EndpointConfig {
        flags: config.flags & !endpoint_flags::INGRESS_ISOLATED,
        ..config
    };
    slot.state = open.state();
    endpoints.set(config.id, slot, 0).expect("slot written");
    assert!(fixture.admits(STRANGER), "the flipped flag had no effect");

    assert_eq!(fixture.drift(), vec![Drift::Flags, Drift::Addresses]);
    fixture.reprogram();
    assert!(!fixture.admits(STRANGER));
    assert_eq!(fixture.drift(), vec![]);
    assert!(fixture
        .tables
        .addresses()
        .get(&address, 0)
        .is_ok_and(|present| present == 1));
}

#[tokio::test]
async fn entries_of_an_id_no_interface_holds_are_removed() {
    let mut fixture = Fixture::new();
    let (key, value) = fixture.live_peer_entry();
    let orphan = netwarden_common::MAX_SLOTS - 1;
    assert_ne!(key.endpoint, orphan);
    fixture
        .tables
        .peer_hosts()
        .insert(
            PeerKey {
                endpoint: orphan,
                ..key
            },
            value,
            0,
        )
        .expect("orphan added");
    fixture
        .tables
        .addresses()
        .insert(
            AddressKey {
                endpoint: orphan,
                addr: addr16(STRANGER),
            },
            1,
            0,
        )
        .expect("orphan address added");
    let snapshot = TableSnapshot::read(fixture.datapath.pins()).expect("snapshot");
    assert_eq!(
        fixture.datapath.remove_orphans(&snapshot).expect("removed"),
        1
    );
    assert!(fixture
        .tables
        .peer_host_entries()
        .iter()
        .all(|(key, _)| key.endpoint != orphan));
    assert!(fixture
        .tables
        .addresses()
        .keys()
        .all(|key| key.expect("key").endpoint != orphan));
    // The endpoint that does hold a slot kept everything.
    assert_eq!(fixture.drift(), vec![]);
    assert!(fixture.admits(PEER));
}

#[tokio::test]
async fn a_swap_after_an_entry_vanished_behind_its_back_succeeds() {
    let mut fixture = Fixture::new();
    let (key, _) = fixture.live_peer_entry();
    fixture.tables.peer_hosts().remove(&key).expect("removed");
    // No drift check first: the swap deletes the old generation from its own records,
    // which name the vanished entry.
    fixture.reprogram();
    assert!(fixture.admits(PEER));
    assert_eq!(fixture.drift(), vec![]);
}

#[tokio::test]
async fn an_endpoint_reprogrammed_after_the_snapshot_is_not_judged_on_it() {
    let mut fixture = Fixture::new();
    // Read while the agent goes on (the reconcile reads without holding the datapath):
    // a swap after the reading leaves the snapshot describing the old generation.
    let snapshot = TableSnapshot::read(fixture.datapath.pins()).expect("snapshot");
    fixture.reprogram();
    let drift = fixture
        .datapath
        .drift(
            &snapshot,
            &fixture.endpoint,
            &policy(),
            &[IpAddr::V4(POD)],
            EndpointSettings::default(),
        )
        .expect("drift check");
    assert_eq!(drift, vec![]);
    // A snapshot read after the swap does judge it, and finds it in step.
    assert_eq!(fixture.drift(), vec![]);
}
