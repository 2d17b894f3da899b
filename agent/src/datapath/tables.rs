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
    PeerKey, PeerValue, PortKey, PortValue, REFERENCE_ENDPOINT,
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
    pub(super) fn flags(self) -> u32 {
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

    /// What was written for `id` is no longer to be trusted (the maps changed under it).
    pub(super) fn forget(&mut self, id: u32) {
        self.0.remove(&id);
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
        let written = Written {
            hosts: insert_all(
                self.peer_hosts_map()?,
                names::MAP_PEER_HOSTS,
                tables.hosts.iter().map(|e| (e.key, e.value)),
            )?,
            peers: insert_all(
                self.peers_map()?,
                names::MAP_PEERS,
                tables
                    .peers
                    .iter()
                    .map(|e| (Key::new(e.prefix_len, e.key), e.value)),
            )?,
            exact_ports: insert_all(
                self.port_exact_map()?,
                names::MAP_PORT_EXACT,
                tables.exact_ports.iter().map(|e| (e.key, e.value)),
            )?,
            ports: insert_all(
                self.ports_map()?,
                names::MAP_PORTS,
                tables
                    .ports
                    .iter()
                    .map(|e| (Key::new(e.prefix_len, e.key), e.value)),
            )?,
        };
        let new_addresses: Vec<AddressKey> = addresses
            .iter()
            .map(|a| AddressKey {
                endpoint: id,
                addr: addr16(*a),
            })
            .collect();
        insert_all(
            self.addresses_map()?,
            names::MAP_ADDRESSES,
            new_addresses.iter().map(|key| (*key, 1)),
        )?;

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
        self.written.0.insert(id, written);
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
        self.remove_all_of(id)?;
        self.remove_flows_of(id)?;
        self.reset_counters(id)?;
        self.slots.release(endpoint);
        Ok(())
    }

    /// Removes every table entry and address of `id` (by scanning the maps).
    pub(super) fn remove_all_of(&mut self, id: u32) -> Result<(), DatapathError> {
        self.written.forget(id);
        self.remove_generation(id, None)?;
        remove_matching(
            self.addresses_map()?,
            names::MAP_ADDRESSES,
            |k: &AddressKey| k.endpoint == id,
        )
    }

    /// Removes `id`'s table entries of `generation` (of both when `None`) by scanning the
    /// maps: for what this process did not write itself.
    fn remove_generation(&mut self, id: u32, generation: Option<u8>) -> Result<(), DatapathError> {
        let ours = |endpoint: u32, g: u8| endpoint == id && generation.is_none_or(|want| g == want);
        let peer = |k: &PeerKey| ours(k.endpoint, k.generation);
        let port = |k: &PortKey| ours(k.endpoint, k.generation);
        remove_matching(self.peer_hosts_map()?, names::MAP_PEER_HOSTS, peer)?;
        remove_matching(self.peers_map()?, names::MAP_PEERS, peer)?;
        remove_matching(self.port_exact_map()?, names::MAP_PORT_EXACT, port)?;
        remove_matching(self.ports_map()?, names::MAP_PORTS, port)
    }

    /// Removes exactly the entries this process wrote for a generation.
    fn remove_written(&mut self, old: &Written) -> Result<(), DatapathError> {
        remove_keys(self.peer_hosts_map()?, names::MAP_PEER_HOSTS, &old.hosts)?;
        remove_keys(self.peers_map()?, names::MAP_PEERS, &old.peers)?;
        remove_keys(
            self.port_exact_map()?,
            names::MAP_PORT_EXACT,
            &old.exact_ports,
        )?;
        remove_keys(self.ports_map()?, names::MAP_PORTS, &old.ports)
    }

    /// Forgets every tracked flow of `endpoint`: their next packets are judged as new.
    pub fn clear_flows(&mut self, endpoint: &EndpointKey) -> Result<(), DatapathError> {
        let id = self
            .endpoint_config(endpoint)?
            .ok_or(DatapathError::NotProgrammed(*endpoint))?
            .id;
        self.remove_flows_of(id)
    }

    /// Removes the flows the benchmark's admission reference program inserted.
    pub fn clear_reference_flows(&mut self) -> Result<(), DatapathError> {
        self.remove_flows_of(REFERENCE_ENDPOINT)
    }

    /// Removes every tracked flow of endpoint id `id` (by scanning the flow table).
    fn remove_flows_of(&mut self, id: u32) -> Result<(), DatapathError> {
        // aya reads an LRU hash through the plain HashMap type.
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
        // aya reports a delete of a missing key as the syscall's ENOENT.
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(map_error(map)(e)),
    }
}

/// What the table writer does with a hash map or an LPM trie. `Key` is the map's whole
/// key (for a trie, with its prefix length); `Data` what a filter looks at.
trait KeyedMap {
    type Key;
    type Data;
    type Value;
    fn put(&mut self, key: &Self::Key, value: Self::Value) -> Result<(), aya::maps::MapError>;
    fn all_keys(&self) -> Vec<Self::Key>;
    fn data(key: &Self::Key) -> Self::Data;
    fn remove_key(&mut self, key: &Self::Key) -> Result<(), aya::maps::MapError>;
}

impl<K: aya::Pod, V: aya::Pod> KeyedMap for HashMap<&mut MapData, K, V> {
    type Key = K;
    type Data = K;
    type Value = V;
    fn put(&mut self, key: &K, value: V) -> Result<(), aya::maps::MapError> {
        self.insert(key, value, 0)
    }
    fn all_keys(&self) -> Vec<K> {
        self.keys().filter_map(Result::ok).collect()
    }
    fn data(key: &K) -> K {
        *key
    }
    fn remove_key(&mut self, key: &K) -> Result<(), aya::maps::MapError> {
        self.remove(key)
    }
}

impl<K: aya::Pod, V: aya::Pod> KeyedMap for LpmTrie<&mut MapData, K, V> {
    type Key = Key<K>;
    type Data = K;
    type Value = V;
    fn put(&mut self, key: &Key<K>, value: V) -> Result<(), aya::maps::MapError> {
        self.insert(key, value, 0)
    }
    fn all_keys(&self) -> Vec<Key<K>> {
        self.keys().filter_map(Result::ok).collect()
    }
    fn data(key: &Key<K>) -> K {
        key.data()
    }
    fn remove_key(&mut self, key: &Key<K>) -> Result<(), aya::maps::MapError> {
        self.remove(key)
    }
}

/// Writes `entries` and returns their keys (to delete exactly them later).
fn insert_all<M: KeyedMap>(
    mut map: M,
    name: &'static str,
    entries: impl Iterator<Item = (M::Key, M::Value)>,
) -> Result<Vec<M::Key>, DatapathError> {
    let mut keys = Vec::with_capacity(entries.size_hint().0);
    for (key, value) in entries {
        map.put(&key, value).map_err(map_error(name))?;
        keys.push(key);
    }
    Ok(keys)
}

fn remove_keys<M: KeyedMap>(
    mut map: M,
    name: &'static str,
    keys: &[M::Key],
) -> Result<(), DatapathError> {
    for key in keys {
        remove_ignoring_missing(map.remove_key(key), name)?;
    }
    Ok(())
}

/// Every key whose data `matches` selects is removed (a scan of the whole map).
fn remove_matching<M: KeyedMap>(
    mut map: M,
    name: &'static str,
    matches: impl Fn(&M::Data) -> bool,
) -> Result<(), DatapathError> {
    for key in map.all_keys().into_iter().filter(|k| matches(&M::data(k))) {
        remove_ignoring_missing(map.remove_key(&key), name)?;
    }
    Ok(())
}
