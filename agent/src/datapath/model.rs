//! The datapath's policy lookup in userspace, on the very tables [`compile`] produces and
//! the kernel reads: for tests (the eBPF program must agree with it) and for `explain`.
//!
//! [`compile`]: super::compile::compile
mod lpm;
pub mod packet;
pub mod scenario;

use std::{collections::HashMap, net::IpAddr};

use netwarden_common::{
    peer_flags, EndpointConfig, PeerKey, PeerValue, PortKey, PortValue, PEER_KEY_HEADER_BITS,
};

use self::lpm::Lpm;
use super::{
    compile::{direction_byte, map_address, peer_prefixes_flag, CompiledTables},
    rules::Direction,
};

/// What a packet carries above IP, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    Tcp {
        dst_port: u16,
    },
    Udp {
        dst_port: u16,
    },
    Sctp {
        dst_port: u16,
    },
    /// No port to match: ICMP, other IP protocols, non-first fragments. Only a rule that
    /// allows every protocol and port admits it.
    Portless,
}

/// The tables' answer for a new flow in an isolated direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The peer is in `class`; `rule` is the `PORTS` entry's rule tag (lowest rule index
    /// allowing the port), `None` when the class allows everything (`ALLOW_ALL`).
    Allowed {
        class: u32,
        rule: Option<u32>,
    },
    Denied,
}

/// The four tables indexed for lookups, as the kernel's hashes and LPM tries answer them.
#[derive(Debug, Clone)]
pub struct TableModel {
    hosts: HashMap<PeerKey, PeerValue>,
    peers: Lpm<PeerValue>,
    exact_ports: HashMap<PortKey, PortValue>,
    ports: Lpm<PortValue>,
}

impl TableModel {
    /// Indexes `tables` (entries with the same masked key: the later one wins, like a map
    /// update).
    pub fn new(tables: &CompiledTables) -> Self {
        let hosts = tables.hosts.iter().map(|e| (e.key, e.value)).collect();
        let mut peers = Lpm::default();
        for e in &tables.peers {
            peers.insert(e.prefix_len, peer_key_bytes(&e.key), e.value);
        }
        let exact_ports = tables
            .exact_ports
            .iter()
            .map(|e| (e.key, e.value))
            .collect();
        let mut ports = Lpm::default();
        for e in &tables.ports {
            ports.insert(e.prefix_len, port_key_bytes(&e.key), e.value);
        }
        Self {
            hosts,
            peers,
            exact_ports,
            ports,
        }
    }

    /// Looks a new flow up under `config`'s keys (endpoint, generation) and flags, exactly
    /// as the kernel does after it found the direction isolated: the peer's class from
    /// `PEER_HOSTS`, else `PEERS` if the direction has prefixes; then either `ALLOW_ALL`
    /// or (class, protocol, destination port) in `PORT_EXACT`, else `PORTS` if the class
    /// has ranges.
    pub fn lookup(
        &self,
        config: &EndpointConfig,
        direction: Direction,
        peer: IpAddr,
        l4: L4,
    ) -> Verdict {
        let peer_key = PeerKey {
            endpoint: config.id,
            direction: direction_byte(direction),
            // The kernel keys the tables with the live generation's low byte.
            generation: config.generation as u8,
            _pad: [0; 2],
            addr: map_address(peer).to_be_bytes(),
        };
        let Some(peer) = self.peer_class(config, direction, &peer_key) else {
            return Verdict::Denied;
        };
        if peer.flags & peer_flags::ALLOW_ALL != 0 {
            return Verdict::Allowed {
                class: peer.class,
                rule: None,
            };
        }
        let (protocol, port) = match l4 {
            L4::Tcp { dst_port } => (6, dst_port),
            L4::Udp { dst_port } => (17, dst_port),
            L4::Sctp { dst_port } => (132, dst_port),
            L4::Portless => return Verdict::Denied,
        };
        let port_key = PortKey {
            endpoint: config.id,
            direction: direction_byte(direction),
            generation: config.generation as u8,
            protocol,
            _pad: 0,
            class: peer.class,
            port: port.to_be_bytes(),
            _pad2: [0; 2],
        };
        match self.port_rule(&peer, &port_key) {
            Some(value) => Verdict::Allowed {
                class: peer.class,
                rule: Some(value.rule),
            },
            None => Verdict::Denied,
        }
    }

    /// The peer's entry: its host entry, else its longest prefix (when there are any).
    fn peer_class(
        &self,
        config: &EndpointConfig,
        direction: Direction,
        key: &PeerKey,
    ) -> Option<PeerValue> {
        if let Some(host) = self.hosts.get(key) {
            return Some(*host);
        }
        if config.flags & peer_prefixes_flag(direction) == 0 {
            return None;
        }
        self.peers.lookup(&peer_key_bytes(key))
    }

    /// The port's entry for the class: its single-port entry, else its block (when the
    /// class has any).
    fn port_rule(&self, peer: &PeerValue, key: &PortKey) -> Option<PortValue> {
        if let Some(exact) = self.exact_ports.get(key) {
            return Some(*exact);
        }
        if peer.flags & peer_flags::PORT_RANGES == 0 {
            return None;
        }
        self.ports.lookup(&port_key_bytes(key))
    }
}

/// The configuration the kernel would run `tables` under (revision 1, no settings).
pub fn config_of(tables: &CompiledTables) -> EndpointConfig {
    EndpointConfig {
        id: tables.endpoint,
        flags: tables.flags,
        generation: u32::from(tables.generation),
        revision: 1,
    }
}

/// One-off lookup in `tables` under their own endpoint and generation (for `explain`;
/// build a [`TableModel`] to look up many flows). Isolation is the caller's business:
/// see [`CompiledTables::is_isolated`].
pub fn lookup(tables: &CompiledTables, direction: Direction, peer: IpAddr, l4: L4) -> Verdict {
    TableModel::new(tables).lookup(&config_of(tables), direction, peer, l4)
}

/// The key data bytes as the kernel sees them (`repr(C)` field order, native endianness).
fn peer_key_bytes(k: &PeerKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(PEER_KEY_HEADER_BITS as usize / 8 + 16);
    b.extend_from_slice(&k.endpoint.to_ne_bytes());
    b.extend_from_slice(&[k.direction, k.generation]);
    b.extend_from_slice(&k._pad);
    b.extend_from_slice(&k.addr);
    b
}

fn port_key_bytes(k: &PortKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&k.endpoint.to_ne_bytes());
    b.extend_from_slice(&[k.direction, k.generation, k.protocol, k._pad]);
    b.extend_from_slice(&k.class.to_ne_bytes());
    b.extend_from_slice(&k.port);
    b.extend_from_slice(&k._pad2);
    b
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeSet, HashSet},
        net::Ipv4Addr,
    };

    use proptest::{prelude::*, test_runner::RngSeed};

    use super::{scenario::Scenario, *};
    use crate::datapath::{
        compile::compile,
        rules::{
            EndpointPolicy, Isolation, PeerBlock, Peers, PortMatch, PortRange, Ports, Protocol,
            Rule,
        },
    };

    /// What the rules themselves say, read straight from `rules.rs`: the indices of the
    /// rules whose peers contain `peer`, and of those that also allow `l4`.
    pub(super) fn direct(rules: &[Rule], peer: IpAddr, l4: L4) -> (BTreeSet<u32>, BTreeSet<u32>) {
        let peer = peer.to_canonical();
        let mut by_peer = BTreeSet::new();
        let mut by_both = BTreeSet::new();
        for (i, rule) in (0u32..).zip(rules) {
            let peer_ok = match &rule.peers {
                Peers::Any => true,
                Peers::Blocks(blocks) => blocks.iter().any(|b| b.contains(peer)),
            };
            if !peer_ok {
                continue;
            }
            by_peer.insert(i);
            let port_ok = match (&rule.ports, l4) {
                (Ports::Any, _) => true,
                (Ports::Matches(_), L4::Portless) => false,
                (Ports::Matches(m), L4::Tcp { dst_port }) => matches(m, Protocol::Tcp, dst_port),
                (Ports::Matches(m), L4::Udp { dst_port }) => matches(m, Protocol::Udp, dst_port),
                (Ports::Matches(m), L4::Sctp { dst_port }) => matches(m, Protocol::Sctp, dst_port),
            };
            if port_ok {
                by_both.insert(i);
            }
        }
        (by_peer, by_both)
    }

    fn matches(m: &[PortMatch], protocol: Protocol, port: u16) -> bool {
        m.iter()
            .any(|m| m.protocol == protocol && m.ports.contains(port))
    }

    fn check_scenario(seed: u64) {
        let scenario = Scenario::generate(seed);
        let tables = compile(3, 1, &scenario.policy);
        let model = TableModel::new(&tables);
        let config = config_of(&tables);
        for probe in &scenario.probes {
            let Isolation::Isolated(rules) = scenario.policy.direction(probe.direction) else {
                assert!(!tables.is_isolated(probe.direction));
                continue;
            };
            assert!(tables.is_isolated(probe.direction));
            let (by_peer, by_both) = direct(rules, probe.peer, probe.l4);
            let got = model.lookup(&config, probe.direction, probe.peer, probe.l4);
            let context = format!("seed {seed}, {probe:?}, got {got:?}");
            match got {
                Verdict::Denied => assert!(by_both.is_empty(), "{context}: denied"),
                Verdict::Allowed { class, rule } => {
                    let class_rules: BTreeSet<u32> = tables.classes[&(probe.direction, class)]
                        .iter()
                        .copied()
                        .collect();
                    assert_eq!(class_rules, by_peer, "{context}: class rules");
                    let lowest = by_both.first().copied();
                    assert!(lowest.is_some(), "{context}: allowed");
                    if let Some(rule) = rule {
                        assert_eq!(Some(rule), lowest, "{context}: rule tag");
                    } else {
                        assert!(
                            by_peer
                                .iter()
                                .any(|&r| rules[r as usize].ports == Ports::Any),
                            "{context}: ALLOW_ALL without a rule allowing all ports"
                        );
                    }
                }
            }
            // Another generation or endpoint sees nothing of these tables.
            for other in [
                EndpointConfig {
                    generation: 0,
                    ..config
                },
                EndpointConfig { id: 4, ..config },
            ] {
                assert_eq!(
                    model.lookup(&other, probe.direction, probe.peer, probe.l4),
                    Verdict::Denied
                );
            }
        }
    }

    /// Brute-force LPM: the longest entry whose first `prefix_len` bits equal the key's.
    fn scan<V: Copy>(entries: &[(Vec<u8>, u32, V)], key: &[u8]) -> Option<V> {
        entries
            .iter()
            .filter(|(bytes, len, _)| lpm::prefix_matches(bytes, key, *len))
            .max_by_key(|(_, len, _)| *len)
            .map(|&(_, _, value)| value)
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 300,
            rng_seed: RngSeed::Fixed(0x006e_776d_6f64_656c),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn compiled_tables_answer_what_the_rules_say(seed in any::<u64>()) {
            check_scenario(seed);
        }

        /// The hashes in front of the tries change no answer: hash, then trie (when the
        /// flags say it holds something) equals one longest-prefix scan over all entries.
        #[test]
        fn hash_then_lpm_agrees_with_a_scan_of_every_entry(seed in any::<u64>()) {
            let scenario = Scenario::generate(seed);
            let tables = compile(3, 1, &scenario.policy);
            let model = TableModel::new(&tables);
            let config = config_of(&tables);
            let full_peer = PEER_KEY_HEADER_BITS + 128;
            let peers: Vec<_> = tables.peers.iter().map(|e| (peer_key_bytes(&e.key), e.prefix_len, e.value))
                .chain(tables.hosts.iter().map(|e| (peer_key_bytes(&e.key), full_peer, e.value)))
                .collect();
            let full_port = netwarden_common::PORT_KEY_HEADER_BITS + 16;
            let ports: Vec<_> = tables.ports.iter().map(|e| (port_key_bytes(&e.key), e.prefix_len, e.value))
                .chain(tables.exact_ports.iter().map(|e| (port_key_bytes(&e.key), full_port, e.value)))
                .collect();
            for probe in &scenario.probes {
                let key = PeerKey {
                    endpoint: 3,
                    direction: direction_byte(probe.direction),
                    generation: 1,
                    _pad: [0; 2],
                    addr: map_address(probe.peer).to_be_bytes(),
                };
                let class = model.peer_class(&config, probe.direction, &key);
                prop_assert_eq!(class, scan(&peers, &peer_key_bytes(&key)), "seed {}", seed);
                let (protocol, port) = match probe.l4 {
                    L4::Tcp { dst_port } => (6, dst_port),
                    L4::Udp { dst_port } => (17, dst_port),
                    L4::Sctp { dst_port } => (132, dst_port),
                    L4::Portless => continue,
                };
                let classes: HashSet<(u8, PeerValue)> = tables.hosts.iter().map(|e| (e.key.direction, e.value))
                    .chain(tables.peers.iter().map(|e| (e.key.direction, e.value)))
                    .collect();
                for (direction, value) in classes {
                    let key = PortKey {
                        endpoint: 3,
                        direction,
                        generation: 1,
                        protocol,
                        _pad: 0,
                        class: value.class,
                        port: port.to_be_bytes(),
                        _pad2: [0; 2],
                    };
                    let got = model.port_rule(&value, &key);
                    prop_assert_eq!(got, scan(&ports, &port_key_bytes(&key)), "seed {}", seed);
                }
            }
        }

        #[test]
        fn compiled_entries_are_canonical(seed in any::<u64>()) {
            let tables = compile(3, 1, &Scenario::generate(seed).policy);
            let mut seen = BTreeSet::new();
            for e in &tables.peers {
                let bytes = peer_key_bytes(&e.key);
                // Host prefixes live in the hash, not in the trie.
                prop_assert!(e.prefix_len >= PEER_KEY_HEADER_BITS && e.prefix_len < 8 * 24);
                prop_assert_eq!(lpm::masked(&bytes, e.prefix_len), bytes.clone(), "host bits are zero");
                prop_assert!(seen.insert((e.key.direction, bytes, e.prefix_len)), "no duplicate entries");
            }
            for e in &tables.ports {
                let bytes = port_key_bytes(&e.key);
                prop_assert!(e.prefix_len < 8 * 14, "single ports live in the hash");
                prop_assert_eq!(lpm::masked(&bytes, e.prefix_len), bytes.clone());
                prop_assert!(seen.insert((e.key.direction, bytes, e.prefix_len)));
            }
            let hosts: HashSet<PeerKey> = tables.hosts.iter().map(|e| e.key).collect();
            prop_assert_eq!(hosts.len(), tables.hosts.len(), "no duplicate hosts");
            let exact: HashSet<PortKey> = tables.exact_ports.iter().map(|e| e.key).collect();
            prop_assert_eq!(exact.len(), tables.exact_ports.len(), "no duplicate ports");
        }
    }

    #[test]
    fn an_except_narrows_only_its_own_block() {
        let rules = vec![
            Rule {
                peers: Peers::Blocks(vec![PeerBlock {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    except: vec!["10.1.0.0/16".parse().unwrap()],
                }]),
                ports: Ports::Any,
            },
            Rule {
                peers: Peers::Blocks(vec![PeerBlock::host("10.1.0.7".parse().unwrap())]),
                ports: Ports::Matches(vec![PortMatch {
                    protocol: Protocol::Udp,
                    ports: PortRange::single(53),
                }]),
            },
        ];
        let tables = compile(
            1,
            0,
            &EndpointPolicy {
                ingress: Isolation::Open,
                egress: Isolation::Isolated(rules),
            },
        );
        let at = |a: [u8; 4], l4| {
            lookup(
                &tables,
                Direction::Egress,
                IpAddr::V4(Ipv4Addr::from(a)),
                l4,
            )
        };
        assert_eq!(
            at([10, 2, 0, 1], L4::Portless),
            Verdict::Allowed {
                class: 0,
                rule: None
            }
        );
        assert_eq!(at([10, 1, 0, 1], L4::Udp { dst_port: 53 }), Verdict::Denied);
        assert!(matches!(
            at([10, 1, 0, 7], L4::Udp { dst_port: 53 }),
            Verdict::Allowed { rule: Some(1), .. }
        ));
        assert_eq!(at([10, 1, 0, 7], L4::Tcp { dst_port: 53 }), Verdict::Denied);
        assert_eq!(at([11, 0, 0, 1], L4::Portless), Verdict::Denied);
        // The same address as v4-mapped IPv6 is the same peer.
        let mapped: IpAddr = "::ffff:10.2.0.1".parse().unwrap();
        assert!(matches!(
            lookup(&tables, Direction::Egress, mapped, L4::Portless),
            Verdict::Allowed { .. }
        ));
        assert_eq!(
            lookup(&tables, Direction::Ingress, mapped, L4::Portless),
            Verdict::Denied
        );
    }
}
