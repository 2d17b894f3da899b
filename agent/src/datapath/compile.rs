//! Compiles an [`EndpointPolicy`] into the entries of the peer tables (`PEER_HOSTS` exact,
//! `PEERS` LPM) and the port tables (`PORT_EXACT` exact, `PORTS` LPM); layouts in
//! `netwarden_common`. Pure: no I/O, deterministic output.
//!
//! Per direction, a packet is allowed when some rule admits both its peer and its
//! (protocol, port). The kernel cannot loop over rules, so the union is computed here:
//! - the address space is cut into prefixes such that the longest prefix holding an
//!   address carries exactly the set of rules whose peers contain it (excepts carved out,
//!   inner prefixes inheriting what their enclosing prefixes allow);
//! - each distinct rule set becomes a peer class, whose allowed ports are the union of its
//!   rules' ports, cut into aligned power-of-two port blocks (one LPM prefix each).
//!
//! Host prefixes (/32, /128) go to `PEER_HOSTS` and single-port blocks to `PORT_EXACT`,
//! which the kernel asks first: a host entry is the longest prefix an address can match
//! and the blocks are disjoint, so a hit there is what the LPM would have answered, and
//! the common case (pods as peers, single ports) never walks a trie. The endpoint flags
//! say which directions still have `PEERS` entries and the peer flags which classes have
//! `PORTS` entries, so a miss is final where the trie has nothing to add.
//!
//! Addresses are 16 bytes: IPv4 as v4-mapped `::ffff:a.b.c.d`. An IPv6 block therefore
//! never covers `::ffff:0:0/96`: IPv4 peers only ever appear there, and an IPv6 block does
//! not contain IPv4 addresses ([`PeerBlock::contains`]). An IPv6 packet that carries a
//! v4-mapped address is judged as that IPv4 address (RFC 4291 2.5.5.2: such addresses do not
//! appear on the wire).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use netwarden_common::{
    direction, endpoint_flags, peer_flags, PeerKey, PeerValue, PortKey, PortValue,
    PEER_KEY_HEADER_BITS, PORT_KEY_HEADER_BITS,
};

use super::rules::{Direction, EndpointPolicy, Isolation, PeerBlock, Peers, Ports, Protocol, Rule};

/// One entry of an LPM trie map: `prefix_len` counts bits over the whole key data
/// (the exact-match header included), as `bpf_lpm_trie_key` expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LpmEntry<K, V> {
    pub prefix_len: u32,
    pub key: K,
    pub value: V,
}

/// One entry of an exact-match hash map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashEntry<K, V> {
    pub key: K,
    pub value: V,
}

/// Everything one endpoint's policy puts into the maps for one table generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledTables {
    pub endpoint: u32,
    pub generation: u8,
    /// `endpoint_flags`: `*_ISOLATED` and `*_PEER_PREFIXES` (only these bits).
    pub flags: u32,
    /// `PEER_HOSTS` entries (host prefixes), sorted by (direction, address).
    pub hosts: Vec<HashEntry<PeerKey, PeerValue>>,
    /// `PEERS` entries (the other prefixes), sorted by (direction, address, length).
    pub peers: Vec<LpmEntry<PeerKey, PeerValue>>,
    /// `PORT_EXACT` entries (single ports), sorted by (direction, class, protocol, port).
    pub exact_ports: Vec<HashEntry<PortKey, PortValue>>,
    /// `PORTS` entries (blocks of several ports), sorted like `exact_ports`.
    pub ports: Vec<LpmEntry<PortKey, PortValue>>,
    /// Userspace only (explain): for each (direction, class), the indices of the rules of
    /// that direction whose peers the class stands for, ascending.
    pub classes: BTreeMap<(Direction, u32), Vec<u32>>,
}

impl CompiledTables {
    /// Whether `direction` is isolated (only what the tables allow passes).
    pub fn is_isolated(&self, direction: Direction) -> bool {
        self.flags & isolation_flag(direction) != 0
    }
}

/// The `direction` byte of the map keys.
pub const fn direction_byte(d: Direction) -> u8 {
    match d {
        Direction::Ingress => direction::INGRESS,
        Direction::Egress => direction::EGRESS,
    }
}

/// The `endpoint_flags` bit saying `d` is isolated.
pub const fn isolation_flag(d: Direction) -> u32 {
    match d {
        Direction::Ingress => endpoint_flags::INGRESS_ISOLATED,
        Direction::Egress => endpoint_flags::EGRESS_ISOLATED,
    }
}

/// The `endpoint_flags` bit saying `PEERS` holds entries of `d`.
pub const fn peer_prefixes_flag(d: Direction) -> u32 {
    match d {
        Direction::Ingress => endpoint_flags::INGRESS_PEER_PREFIXES,
        Direction::Egress => endpoint_flags::EGRESS_PEER_PREFIXES,
    }
}

/// An address as the maps store it: IPv6 as is, IPv4 v4-mapped.
pub fn map_address(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => V4_MAPPED | u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Compiles `policy` for `endpoint` into table generation `generation`.
pub fn compile(endpoint: u32, generation: u8, policy: &EndpointPolicy) -> CompiledTables {
    let mut tables = CompiledTables {
        endpoint,
        generation,
        flags: 0,
        hosts: Vec::new(),
        peers: Vec::new(),
        exact_ports: Vec::new(),
        ports: Vec::new(),
        classes: BTreeMap::new(),
    };
    for d in [Direction::Ingress, Direction::Egress] {
        if let Isolation::Isolated(rules) = policy.direction(d) {
            tables.flags |= isolation_flag(d);
            compile_direction(&mut tables, d, rules);
        }
    }
    tables
}

const V4_MAPPED: u128 = 0xffff << 32;
const V4_MAPPED_PREFIX: Prefix = Prefix {
    base: V4_MAPPED,
    len: 96,
};

/// An address prefix in the 16-byte address space; `base` has no host bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Prefix {
    base: u128,
    len: u8,
}

impl Prefix {
    fn new(base: u128, len: u8) -> Self {
        Self {
            base: base & mask(len),
            len,
        }
    }

    fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(n) => Self::new(
                V4_MAPPED | u128::from(u32::from(n.network())),
                96 + n.prefix_len(),
            ),
            IpNet::V6(n) => Self::new(u128::from(n.network()), n.prefix_len()),
        }
    }

    /// Whether `self` contains all of `other`.
    fn covers(self, other: Prefix) -> bool {
        self.len <= other.len && other.base & mask(self.len) == self.base
    }

    fn overlaps(self, other: Prefix) -> bool {
        self.covers(other) || other.covers(self)
    }

    fn halves(self) -> [Prefix; 2] {
        let bit = 1u128 << (127 - self.len);
        [
            Self::new(self.base, self.len + 1),
            Self::new(self.base | bit, self.len + 1),
        ]
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// The prefixes a block admits: its cidr minus its excepts, minus the v4-mapped range for
/// an IPv6 cidr. Excepts of the other family never match (as in [`PeerBlock::contains`]).
fn block_prefixes(block: &PeerBlock, out: &mut Vec<Prefix>) {
    let cidr = Prefix::of(&block.cidr);
    let mut holes: Vec<Prefix> = block
        .except
        .iter()
        .filter(|e| is_v4(e) == is_v4(&block.cidr))
        .map(Prefix::of)
        .filter(|&e| e.overlaps(cidr))
        .collect();
    if !is_v4(&block.cidr) && cidr.overlaps(V4_MAPPED_PREFIX) {
        holes.push(V4_MAPPED_PREFIX);
    }
    carve(cidr, &holes, out);
}

/// Appends `prefix` minus `holes` (all overlapping `prefix`) as disjoint prefixes.
fn carve(prefix: Prefix, holes: &[Prefix], out: &mut Vec<Prefix>) {
    if holes.is_empty() {
        out.push(prefix);
        return;
    }
    if holes.iter().any(|h| h.covers(prefix)) {
        return;
    }
    // Every hole is strictly inside `prefix`, so it has two halves.
    for half in prefix.halves() {
        let inner: Vec<Prefix> = holes.iter().copied().filter(|h| h.overlaps(half)).collect();
        carve(half, &inner, out);
    }
}

fn is_v4(net: &IpNet) -> bool {
    matches!(net, IpNet::V4(_))
}

fn rule_prefixes(rule: &Rule, out: &mut Vec<Prefix>) {
    match &rule.peers {
        Peers::Any => out.push(Prefix::new(0, 0)),
        Peers::Blocks(blocks) => blocks.iter().for_each(|b| block_prefixes(b, out)),
    }
}

/// For each prefix to store, the ascending indices of every rule whose peers contain the
/// addresses whose longest match it is. Prefixes equal to what their nearest stored
/// enclosing prefix already says are left out: LPM gives the same answer without them.
fn peer_partition(rules: &[Rule]) -> Vec<(Prefix, Vec<u32>)> {
    let mut labelled: Vec<(Prefix, u32)> = Vec::new();
    let mut scratch = Vec::new();
    for (index, rule) in (0u32..).zip(rules) {
        scratch.clear();
        rule_prefixes(rule, &mut scratch);
        labelled.extend(scratch.iter().map(|&p| (p, index)));
    }
    // Sorted by (base, len, rule), prefixes come in depth-first order of the containment
    // forest (prefixes either nest or are disjoint): a stack of the enclosing ones suffices.
    labelled.sort_unstable();
    labelled.dedup();

    let mut out: Vec<(Prefix, Vec<u32>)> = Vec::new();
    // (prefix, the rule set its addresses get)
    let mut stack: Vec<(Prefix, Vec<u32>)> = Vec::new();
    let mut i = 0;
    while i < labelled.len() {
        let prefix = labelled[i].0;
        let mut own = Vec::new();
        while i < labelled.len() && labelled[i].0 == prefix {
            own.push(labelled[i].1);
            i += 1;
        }
        while stack.last().is_some_and(|(p, _)| !p.covers(prefix)) {
            stack.pop();
        }
        let inherited = stack.last().map(|(_, set)| set.as_slice()).unwrap_or(&[]);
        let set = union(inherited, &own);
        if stack.is_empty() || set.as_slice() != inherited {
            out.push((prefix, set.clone()));
        }
        stack.push((prefix, set));
    }
    out
}

fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let set: BTreeSet<u32> = a.iter().chain(b).copied().collect();
    set.into_iter().collect()
}

fn compile_direction(tables: &mut CompiledTables, d: Direction, rules: &[Rule]) {
    let partition = peer_partition(rules);
    let distinct: BTreeSet<&Vec<u32>> = partition.iter().map(|(_, set)| set).collect();
    let class_of: BTreeMap<&Vec<u32>, u32> = distinct.into_iter().zip(0u32..).collect();
    let dir = direction_byte(d);

    let mut allow_all = BTreeSet::new();
    let mut port_ranges = BTreeSet::new();
    for (set, &class) in &class_of {
        tables.classes.insert((d, class), set.to_vec());
        if set.iter().any(|&r| rules[r as usize].ports == Ports::Any) {
            allow_all.insert(class);
            continue;
        }
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            let ranges = set.iter().flat_map(|&r| match &rules[r as usize].ports {
                Ports::Any => Vec::new(),
                Ports::Matches(matches) => matches
                    .iter()
                    .filter(|m| m.protocol == protocol && m.ports.first <= m.ports.last)
                    .map(|m| (u32::from(m.ports.first), u32::from(m.ports.last), r))
                    .collect(),
            });
            for (first, last, rule) in disjoint_ranges(ranges.collect()) {
                for (port, bits) in aligned_blocks(first, last) {
                    let key = PortKey {
                        endpoint: tables.endpoint,
                        direction: dir,
                        generation: tables.generation,
                        protocol: protocol.number(),
                        _pad: 0,
                        class,
                        port: port.to_be_bytes(),
                        _pad2: [0; 2],
                    };
                    let value = PortValue { rule };
                    if bits == 16 {
                        tables.exact_ports.push(HashEntry { key, value });
                    } else {
                        port_ranges.insert(class);
                        tables.ports.push(LpmEntry {
                            prefix_len: PORT_KEY_HEADER_BITS + bits,
                            key,
                            value,
                        });
                    }
                }
            }
        }
    }

    for (prefix, set) in &partition {
        let class = class_of[set];
        let mut flags = 0;
        if allow_all.contains(&class) {
            flags |= peer_flags::ALLOW_ALL;
        }
        if port_ranges.contains(&class) {
            flags |= peer_flags::PORT_RANGES;
        }
        let key = PeerKey {
            endpoint: tables.endpoint,
            direction: dir,
            generation: tables.generation,
            _pad: [0; 2],
            addr: prefix.base.to_be_bytes(),
        };
        let value = PeerValue { class, flags };
        if prefix.len == 128 {
            tables.hosts.push(HashEntry { key, value });
        } else {
            tables.flags |= peer_prefixes_flag(d);
            tables.peers.push(LpmEntry {
                prefix_len: PEER_KEY_HEADER_BITS + u32::from(prefix.len),
                key,
                value,
            });
        }
    }
}

/// Inclusive ranges tagged with a rule -> disjoint inclusive ranges, each tagged with the
/// lowest rule covering it, ascending; adjacent ranges with the same tag are merged.
fn disjoint_ranges(mut ranges: Vec<(u32, u32, u32)>) -> Vec<(u32, u32, u32)> {
    ranges.sort_unstable();
    // Boundaries where the covering set may change.
    let mut cuts: Vec<u32> = ranges.iter().flat_map(|&(f, l, _)| [f, l + 1]).collect();
    cuts.sort_unstable();
    cuts.dedup();

    let mut out: Vec<(u32, u32, u32)> = Vec::new();
    // Active ranges as (rule -> how many ranges of it cover the current segment).
    let mut active: BTreeMap<u32, usize> = BTreeMap::new();
    let mut ends: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut next = 0;
    for window in cuts.windows(2) {
        let (start, end) = (window[0], window[1] - 1);
        if let Some(ending) = ends.remove(&start) {
            for rule in ending {
                let count = active.get_mut(&rule).expect("an ending range was active");
                *count -= 1;
                if *count == 0 {
                    active.remove(&rule);
                }
            }
        }
        while next < ranges.len() && ranges[next].0 == start {
            let (_, last, rule) = ranges[next];
            *active.entry(rule).or_default() += 1;
            ends.entry(last + 1).or_default().push(rule);
            next += 1;
        }
        let Some(&rule) = active.keys().next() else {
            continue;
        };
        match out.last_mut() {
            Some(prev) if prev.2 == rule && prev.1 + 1 == start => prev.1 = end,
            _ => out.push((start, end, rule)),
        }
    }
    out
}

/// `[first, last]` as aligned power-of-two blocks: (first port, prefix bits of the port).
fn aligned_blocks(first: u32, last: u32) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let mut start = first;
    while start <= last {
        let mut size_log = if start == 0 {
            16
        } else {
            start.trailing_zeros().min(16)
        };
        while start + (1 << size_log) - 1 > last {
            size_log -= 1;
        }
        out.push((start as u16, 16 - size_log));
        start += 1 << size_log;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::datapath::rules::{PortMatch, PortRange};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn tcp(first: u16, last: u16) -> PortMatch {
        PortMatch {
            protocol: Protocol::Tcp,
            ports: PortRange { first, last },
        }
    }

    fn ingress(rules: Vec<Rule>) -> EndpointPolicy {
        EndpointPolicy {
            ingress: Isolation::Isolated(rules),
            egress: Isolation::Open,
        }
    }

    fn block(cidr: &str, except: &[&str]) -> PeerBlock {
        PeerBlock {
            cidr: net(cidr),
            except: except.iter().map(|e| net(e)).collect(),
        }
    }

    #[test]
    fn aligned_blocks_cover_exactly_the_range() {
        assert_eq!(aligned_blocks(0, 65535), vec![(0, 0)]);
        assert_eq!(aligned_blocks(80, 80), vec![(80, 16)]);
        assert_eq!(aligned_blocks(65535, 65535), vec![(65535, 16)]);
        assert_eq!(
            aligned_blocks(1, 8),
            vec![(1, 16), (2, 15), (4, 14), (8, 16)]
        );
        for (first, last) in [(0, 0), (1, 65535), (1000, 2047), (3, 65534), (0, 65534)] {
            let blocks = aligned_blocks(first, last);
            let mut next = first;
            for (port, bits) in blocks {
                let size = 1u32 << (16 - bits);
                assert_eq!(u32::from(port), next);
                assert_eq!(u32::from(port) % size, 0, "block {port}/{bits} is aligned");
                next += size;
            }
            assert_eq!(next, last + 1);
        }
    }

    #[test]
    fn overlapping_ranges_become_disjoint_with_the_lowest_rule() {
        let out = disjoint_ranges(vec![(10, 20, 3), (15, 30, 1), (31, 40, 1), (50, 50, 2)]);
        assert_eq!(out, vec![(10, 14, 3), (15, 40, 1), (50, 50, 2)]);
        let out = disjoint_ranges(vec![(0, 65535, 2), (80, 80, 0), (0, 65535, 2)]);
        assert_eq!(out, vec![(0, 79, 2), (80, 80, 0), (81, 65535, 2)]);
    }

    #[test]
    fn an_except_is_carved_into_the_complementary_prefixes() {
        let tables = compile(
            7,
            1,
            &ingress(vec![Rule {
                peers: Peers::Blocks(vec![block("10.0.0.0/8", &["10.1.0.0/16"])]),
                ports: Ports::Any,
            }]),
        );
        assert_eq!(
            tables.flags,
            endpoint_flags::INGRESS_ISOLATED | endpoint_flags::INGRESS_PEER_PREFIXES
        );
        assert!(tables.hosts.is_empty());
        // 10/8 minus 10.1/16: 10.0/16, 10.2/15, 10.4/14, ..., 10.128/9.
        assert_eq!(tables.peers.len(), 8);
        let first = &tables.peers[0];
        assert_eq!(first.prefix_len, PEER_KEY_HEADER_BITS + 96 + 16);
        assert_eq!(first.key.endpoint, 7);
        assert_eq!(first.key.generation, 1);
        assert_eq!(first.key.direction, direction::INGRESS);
        assert_eq!(&first.key.addr[10..], &[0xff, 0xff, 10, 0, 0, 0]);
        assert!(tables
            .peers
            .iter()
            .all(|e| e.value.flags == peer_flags::ALLOW_ALL && e.value.class == 0));
        assert!(tables.ports.is_empty() && tables.exact_ports.is_empty());
    }

    #[test]
    fn an_inner_prefix_carries_the_rules_of_the_outer_one() {
        let tables = compile(
            1,
            0,
            &ingress(vec![
                Rule {
                    peers: Peers::Blocks(vec![block("10.0.0.0/8", &[])]),
                    ports: Ports::Matches(vec![tcp(80, 80)]),
                },
                Rule {
                    peers: Peers::Blocks(vec![block("10.1.2.0/24", &[])]),
                    ports: Ports::Matches(vec![tcp(443, 443)]),
                },
            ]),
        );
        assert_eq!(tables.peers.len(), 2);
        let inner = tables
            .peers
            .iter()
            .find(|e| e.prefix_len == 64 + 120)
            .unwrap();
        assert_eq!(
            tables.classes[&(Direction::Ingress, inner.value.class)],
            vec![0, 1]
        );
        let inner_ports: Vec<(u16, u32)> = tables
            .exact_ports
            .iter()
            .filter(|p| p.key.class == inner.value.class)
            .map(|p| (u16::from_be_bytes(p.key.port), p.value.rule))
            .collect();
        assert_eq!(inner_ports, vec![(80, 0), (443, 1)]);
    }

    #[test]
    fn an_ipv6_block_leaves_the_ipv4_range_alone() {
        let tables = compile(
            1,
            0,
            &ingress(vec![Rule {
                peers: Peers::Blocks(vec![block("::/0", &[])]),
                ports: Ports::Any,
            }]),
        );
        let v4 = map_address(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(!tables.peers.iter().any(|e| {
            let len = (e.prefix_len - PEER_KEY_HEADER_BITS) as u8;
            Prefix::new(u128::from_be_bytes(e.key.addr), len).covers(Prefix::new(v4, 128))
        }));
        // ::/0 minus ::ffff:0:0/96 is 96 prefixes.
        assert_eq!(tables.peers.len(), 96);
    }

    #[test]
    fn open_directions_and_empty_rule_lists_have_no_entries() {
        let tables = compile(1, 0, &ingress(Vec::new()));
        assert_eq!(tables.flags, endpoint_flags::INGRESS_ISOLATED);
        assert!(tables.peers.is_empty() && tables.ports.is_empty());
        let open = compile(1, 0, &EndpointPolicy::default());
        assert_eq!(open.flags, 0);
    }

    #[test]
    fn a_hundred_thousand_hosts_compile_to_one_class() {
        let hosts = (0..100_000u32)
            .map(|i| PeerBlock::host(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 3))))
            .collect();
        let tables = compile(
            1,
            0,
            &ingress(vec![Rule {
                peers: Peers::Blocks(hosts),
                ports: Ports::Matches(vec![tcp(8080, 8080)]),
            }]),
        );
        assert_eq!(tables.hosts.len(), 100_000);
        assert!(tables.peers.is_empty());
        assert_eq!(tables.flags, endpoint_flags::INGRESS_ISOLATED);
        assert_eq!(tables.classes.len(), 1);
        assert_eq!(tables.exact_ports.len(), 1);
        assert!(tables.ports.is_empty());
        assert!(tables.hosts.iter().all(|e| e.value.flags == 0));
    }

    #[test]
    fn hosts_and_single_ports_go_to_the_hashes_ranges_to_the_tries() {
        let tables = compile(
            1,
            0,
            &ingress(vec![
                Rule {
                    peers: Peers::Blocks(vec![block("10.0.0.0/8", &[]), block("10.1.2.3/32", &[])]),
                    ports: Ports::Matches(vec![tcp(80, 80)]),
                },
                Rule {
                    peers: Peers::Blocks(vec![block("2001:db8::1/128", &[])]),
                    ports: Ports::Matches(vec![tcp(8000, 8003), tcp(443, 443)]),
                },
            ]),
        );
        // 10.1.2.3 is inside 10/8 with the same rule: the LPM entry answers for it.
        assert_eq!(tables.peers.len(), 1);
        assert_eq!(tables.hosts.len(), 1);
        let host = tables.hosts[0];
        assert_eq!(
            host.key.addr,
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(host.value.flags, peer_flags::PORT_RANGES);
        assert_eq!(
            tables.flags,
            endpoint_flags::INGRESS_ISOLATED | endpoint_flags::INGRESS_PEER_PREFIXES
        );
        let exact: Vec<u16> = tables
            .exact_ports
            .iter()
            .map(|e| u16::from_be_bytes(e.key.port))
            .collect();
        assert_eq!(exact, vec![80, 443]);
        assert_eq!(tables.ports.len(), 1, "8000-8003 is one aligned block");
        assert_eq!(tables.ports[0].key.class, host.value.class);
    }
}
