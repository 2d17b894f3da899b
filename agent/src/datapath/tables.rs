//! The table writer: compiles an endpoint's policy (`compile.rs`) into the generation not
//! in use, puts the entries into the peer and port tables, its addresses into
//! `ADDRESSES`, and flips the endpoint's slot so packets switch tables at once.
//!
//! Order of a swap: write the new generation's entries (invisible: the live config still
//! names the old generation), replace the slot's state word in one atomic store (new
//! generation, revision + 1, flags), then delete the old generation. A packet sees the old
//! table or the new one, never a mix.
use std::{collections::HashMap as StdHashMap, net::IpAddr};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap, MapData,
};
use netwarden_common::{
    endpoint_flags, names, Addr, AddressKey, EndpointConfig, EndpointKey, FlowKey, FlowState,
    PeerKey, PeerValue, PortKey, PortValue,
};

use super::{compile, rules::EndpointPolicy, Datapath, DatapathError};

/// Per-endpoint switches that are not policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSettings {
    /// Drop egress packets whose source is not one of the endpoint's addresses.
    pub anti_spoof: bool,
    /// Report allowed new flows as events too.
    pub report_allows: bool,
}

impl EndpointSettings {
    fn flags(self) -> u32 {
        let mut flags = 0;
        if self.anti_spoof {
            flags |= endpoint_flags::ANTI_SPOOF;
        }
        if self.report_allows {
            flags |= endpoint_flags::REPORT_ALLOWS;
        }
        flags
    }
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self {
            anti_spoof: true,
            report_allows: false,
        }
    }
}

/// The keys of one endpoint's live generation, as this process wrote them.
#[derive(Default)]
struct Written {
    hosts: Vec<PeerKey>,
    peers: Vec<Key<PeerKey>>,
    exact_ports: Vec<PortKey>,
    ports: Vec<Key<PortKey>>,
}

/// Per endpoint id: the live generation's keys. An id is here only when this process
/// knows every table entry of it; for the others (slots adopted from an earlier process)
/// a swap finds what to delete by scanning the maps, which costs milliseconds for the
/// big hashes.
#[derive(Default)]
pub(super) struct WrittenIndex(StdHashMap<u32, Written>);

impl WrittenIndex {
    /// `id` was just given out: it has no entries (a slot is freed only after all of
    /// them are deleted).
    pub(super) fn fresh(&mut self, id: u32) {
        self.0.insert(id, Written::default());
    }
}

impl Datapath {
    /// Replaces the policy, addresses and settings of an attached endpoint in one step as
    /// packets see it, and returns the configuration now live.
    pub fn program(
        &mut self,
        endpoint: &EndpointKey,
        policy: &EndpointPolicy,
        addresses: &[IpAddr],
        settings: EndpointSettings,
    ) -> Result<EndpointConfig, DatapathError> {
        let id = self.slot(endpoint)?;
        let current = self.slots.config(id);
        let generation = current.map_or(0, |c| c.generation as u8 ^ 1);
        let tables = compile::compile(id, generation, policy);
        // Taken out while the maps change: if this fails midway, the next swap scans.
        let known = self.written.0.remove(&id);
        if known.is_none() {
            // Leftovers of an interrupted earlier write in the generation to be filled.
            self.remove_generation(id, Some(generation))?;
        }
        let mut host_map = self.peer_hosts_map()?;
        let mut written_hosts = Vec::with_capacity(tables.hosts.len());
        for entry in &tables.hosts {
            host_map
                .insert(entry.key, entry.value, 0)
                .map_err(map_error(names::MAP_PEER_HOSTS))?;
            written_hosts.push(entry.key);
        }
        let mut peer_map = self.peers_map()?;
        let mut written_peers = Vec::with_capacity(tables.peers.len());
        for entry in &tables.peers {
            let key = Key::new(entry.prefix_len, entry.key);
            peer_map
                .insert(&key, entry.value, 0)
                .map_err(map_error(names::MAP_PEERS))?;
            written_peers.push(key);
        }
        let mut exact_map = self.port_exact_map()?;
        let mut written_exact = Vec::with_capacity(tables.exact_ports.len());
        for entry in &tables.exact_ports {
            exact_map
                .insert(entry.key, entry.value, 0)
                .map_err(map_error(names::MAP_PORT_EXACT))?;
            written_exact.push(entry.key);
        }
        let mut port_map = self.ports_map()?;
        let mut written_ports = Vec::with_capacity(tables.ports.len());
        for entry in &tables.ports {
            let key = Key::new(entry.prefix_len, entry.key);
            port_map
                .insert(&key, entry.value, 0)
                .map_err(map_error(names::MAP_PORTS))?;
            written_ports.push(key);
        }
        let new_addresses: Vec<AddressKey> = addresses
            .iter()
            .map(|a| AddressKey {
                endpoint: id,
                addr: addr16(*a),
            })
            .collect();
        let mut address_map = self.addresses_map()?;
        for key in &new_addresses {
            address_map
                .insert(key, 1, 0)
                .map_err(map_error(names::MAP_ADDRESSES))?;
        }

        let config = EndpointConfig {
            id,
            flags: tables.flags | settings.flags(),
            generation: u32::from(generation),
            // Never 0: a zero state word means "not programmed".
            revision: current.map_or(1, |c| c.revision.wrapping_add(1).max(1)),
        };
        self.slots.set_config(&config);

        // Now unreachable: the old generation and addresses no longer assigned.
        match known {
            Some(old) => self.remove_written(&old)?,
            None => self.remove_generation(id, Some(generation ^ 1))?,
        }
        remove_matching(
            self.addresses_map()?,
            names::MAP_ADDRESSES,
            |k: &AddressKey| k.endpoint == id && !new_addresses.contains(k),
        )?;
        self.written.0.insert(
            id,
            Written {
                hosts: written_hosts,
                peers: written_peers,
                exact_ports: written_exact,
                ports: written_ports,
            },
        );
        Ok(config)
    }

    /// The live configuration of `endpoint`, if it has been programmed.
    pub fn endpoint_config(
        &mut self,
        endpoint: &EndpointKey,
    ) -> Result<Option<EndpointConfig>, DatapathError> {
        Ok(self
            .slots
            .slot_of(endpoint)
            .and_then(|slot| self.slots.config(slot)))
    }

    /// Removes every entry of `endpoint` from every map (tables, addresses, flows,
    /// counters) and takes its slot back, which may then be given to another endpoint
    /// without inheriting anything.
    pub(super) fn free(&mut self, endpoint: &EndpointKey) -> Result<(), DatapathError> {
        let Some(id) = self.slots.slot_of(endpoint) else {
            return Ok(());
        };
        // First the config: from here on packets are dropped as not programmed.
        self.slots.unprogram(id);
        self.written.0.remove(&id);
        self.remove_generation(id, None)?;
        remove_matching(
            self.addresses_map()?,
            names::MAP_ADDRESSES,
            |k: &AddressKey| k.endpoint == id,
        )?;
        // aya reads an LRU hash through the plain HashMap type.
        let conntrack: HashMap<_, FlowKey, FlowState> = self.typed_map(names::MAP_CONNTRACK)?;
        remove_matching(conntrack, names::MAP_CONNTRACK, |k: &FlowKey| {
            k.endpoint == id
        })?;
        self.reset_counters(id)?;
        self.slots.release(endpoint);
        Ok(())
    }

    /// Removes `id`'s table entries of `generation` (of both when `None`) by scanning the
    /// maps: for what this process did not write itself.
    fn remove_generation(&mut self, id: u32, generation: Option<u8>) -> Result<(), DatapathError> {
        let ours = |endpoint: u32, g: u8| endpoint == id && generation.is_none_or(|want| g == want);
        remove_matching(
            self.peer_hosts_map()?,
            names::MAP_PEER_HOSTS,
            |k: &PeerKey| ours(k.endpoint, k.generation),
        )?;
        remove_matching_prefixes(self.peers_map()?, names::MAP_PEERS, |k| {
            ours(k.endpoint, k.generation)
        })?;
        remove_matching(
            self.port_exact_map()?,
            names::MAP_PORT_EXACT,
            |k: &PortKey| ours(k.endpoint, k.generation),
        )?;
        remove_matching_prefixes(self.ports_map()?, names::MAP_PORTS, |k| {
            ours(k.endpoint, k.generation)
        })
    }

    /// Removes exactly the entries this process wrote for a generation.
    fn remove_written(&mut self, old: &Written) -> Result<(), DatapathError> {
        let mut host_map = self.peer_hosts_map()?;
        for key in &old.hosts {
            remove_ignoring_missing(host_map.remove(key), names::MAP_PEER_HOSTS)?;
        }
        let mut peer_map = self.peers_map()?;
        for key in &old.peers {
            remove_ignoring_missing(peer_map.remove(key), names::MAP_PEERS)?;
        }
        let mut exact_map = self.port_exact_map()?;
        for key in &old.exact_ports {
            remove_ignoring_missing(exact_map.remove(key), names::MAP_PORT_EXACT)?;
        }
        let mut port_map = self.ports_map()?;
        for key in &old.ports {
            remove_ignoring_missing(port_map.remove(key), names::MAP_PORTS)?;
        }
        Ok(())
    }

    /// Forgets every tracked flow of `endpoint`: their next packets are judged as new.
    pub fn clear_flows(&mut self, endpoint: &EndpointKey) -> Result<(), DatapathError> {
        let id = self
            .endpoint_config(endpoint)?
            .ok_or(DatapathError::NotProgrammed(*endpoint))?
            .id;
        let conntrack: HashMap<_, FlowKey, FlowState> = self.typed_map(names::MAP_CONNTRACK)?;
        remove_matching(conntrack, names::MAP_CONNTRACK, |k: &FlowKey| {
            k.endpoint == id
        })
    }

    fn peer_hosts_map(
        &mut self,
    ) -> Result<HashMap<&mut MapData, PeerKey, PeerValue>, DatapathError> {
        self.typed_map(names::MAP_PEER_HOSTS)
    }

    fn port_exact_map(
        &mut self,
    ) -> Result<HashMap<&mut MapData, PortKey, PortValue>, DatapathError> {
        self.typed_map(names::MAP_PORT_EXACT)
    }

    fn peers_map(&mut self) -> Result<LpmTrie<&mut MapData, PeerKey, PeerValue>, DatapathError> {
        self.typed_map(names::MAP_PEERS)
    }

    fn ports_map(&mut self) -> Result<LpmTrie<&mut MapData, PortKey, PortValue>, DatapathError> {
        self.typed_map(names::MAP_PORTS)
    }

    fn addresses_map(&mut self) -> Result<HashMap<&mut MapData, AddressKey, u8>, DatapathError> {
        self.typed_map(names::MAP_ADDRESSES)
    }

    /// A map of the object, typed.
    pub(super) fn typed_map<'a, M>(&'a mut self, name: &'static str) -> Result<M, DatapathError>
    where
        M: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .shared
            .map_mut(name)
            .ok_or(DatapathError::Missing { kind: "map", name })?;
        M::try_from(map).map_err(map_error(name))
    }
}

/// The 16-byte form of an address: IPv4 as `::ffff:a.b.c.d`.
pub fn addr16(address: IpAddr) -> Addr {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

pub(super) fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map {
        map,
        source: Box::new(source),
    }
}

fn remove_ignoring_missing(
    result: Result<(), aya::maps::MapError>,
    map: &'static str,
) -> Result<(), DatapathError> {
    match result {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_error(map)(e)),
    }
}

/// LPM tries: every key `matches` selects is removed.
fn remove_matching_prefixes<K: aya::Pod, V: aya::Pod>(
    mut map: LpmTrie<&mut MapData, K, V>,
    name: &'static str,
    matches: impl Fn(&K) -> bool,
) -> Result<(), DatapathError> {
    let keys: Vec<_> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| matches(&k.data()))
        .collect();
    for key in keys {
        remove_ignoring_missing(map.remove(&key), name)?;
    }
    Ok(())
}

/// Hash-like maps: every key `matches` selects is removed.
trait KeyedMap<K> {
    fn all_keys(&self) -> Vec<K>;
    fn remove_key(&mut self, key: &K) -> Result<(), aya::maps::MapError>;
}

macro_rules! keyed_map {
    ($map:ident) => {
        impl<K: aya::Pod, V: aya::Pod> KeyedMap<K> for $map<&mut MapData, K, V> {
            fn all_keys(&self) -> Vec<K> {
                self.keys().filter_map(Result::ok).collect()
            }
            fn remove_key(&mut self, key: &K) -> Result<(), aya::maps::MapError> {
                self.remove(key)
            }
        }
    };
}
keyed_map!(HashMap);

fn remove_matching<K>(
    mut map: impl KeyedMap<K>,
    name: &'static str,
    matches: impl Fn(&K) -> bool,
) -> Result<(), DatapathError> {
    for key in map.all_keys().into_iter().filter(|k| matches(k)) {
        remove_ignoring_missing(map.remove_key(&key), name)?;
    }
    Ok(())
}
