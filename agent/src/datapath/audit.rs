//! Drift checks: what the kernel's tables hold, read in one pass, against what each
//! endpoint's policy compiles to. Anyone with access to the pinned maps (or a bug) can add,
//! change or delete an entry; the periodic reconcile finds it here and rewrites the
//! endpoint. Entries of an id no slot is given to are removed outright: the next endpoint
//! given that slot would inherit them.
use std::{
    collections::{HashMap as StdHashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
};

use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData},
    Pod,
};
use netwarden_common::{
    names, Addr, AddressKey, EndpointKey, EndpointSlot, PeerKey, PeerValue, PortKey, PortValue,
};

use super::{
    compile::{self, CompiledTables, HashEntry, LpmEntry},
    pins::PinRoot,
    rules::EndpointPolicy,
    tables::{addr16, map_error, EndpointSettings},
    Datapath, DatapathError,
};

/// Every table entry and assigned address in the maps, by endpoint id.
pub struct TableSnapshot {
    /// Per endpoint id: its slot's state word when the reading began (programmed only).
    states: StdHashMap<u32, u64>,
    /// Per (endpoint id, generation).
    tables: StdHashMap<(u32, u8), Entries>,
    addresses: StdHashMap<u32, HashSet<Addr>>,
}

/// One generation of one endpoint's tables, as sets (the maps have no order).
#[derive(Default, PartialEq, Eq)]
struct Entries {
    hosts: HashSet<HashEntry<PeerKey, PeerValue>>,
    peers: HashSet<LpmEntry<PeerKey, PeerValue>>,
    exact_ports: HashSet<HashEntry<PortKey, PortValue>>,
    ports: HashSet<LpmEntry<PortKey, PortValue>>,
}

impl From<CompiledTables> for Entries {
    fn from(tables: CompiledTables) -> Self {
        Self {
            hosts: tables.hosts.into_iter().collect(),
            peers: tables.peers.into_iter().collect(),
            exact_ports: tables.exact_ports.into_iter().collect(),
            ports: tables.ports.into_iter().collect(),
        }
    }
}

/// What a drift check found wrong with one endpoint, for the operator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// The slot's flags are not what the policy and settings give.
    Flags,
    /// The live generation's entries differ from the compiled policy.
    LiveTables,
    /// The generation not in use holds entries: the next swap would make them live.
    IdleTables,
    /// The assigned addresses (anti-spoofing) differ.
    Addresses,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Flags => "its flags",
            Self::LiveTables => "its live peer/port tables",
            Self::IdleTables => "entries in its idle table generation",
            Self::Addresses => "its assigned addresses",
        })
    }
}

impl TableSnapshot {
    /// Reads every table entry, assigned address and slot state from the maps pinned
    /// under `pins` (one scan of each), through descriptors of its own: it needs no hold
    /// on the datapath, so the agent reads while ADDs and policy updates go on.
    pub fn read(pins: &PinRoot) -> Result<Self, DatapathError> {
        let maps = Pinned(pins.maps());
        // The slot states first: an endpoint reprogrammed while the tables are read has
        // another state by the time it is checked, and is not judged on this snapshot.
        let endpoints: Array<MapData, EndpointSlot> =
            maps.typed(names::MAP_ENDPOINTS, Map::Array)?;
        let mut states = StdHashMap::new();
        for slot in 1..endpoints.len() {
            let entry = endpoints
                .get(&slot, 0)
                .map_err(map_error(names::MAP_ENDPOINTS))?;
            if entry.state != 0 {
                states.insert(slot, entry.state);
            }
        }
        let mut tables: StdHashMap<(u32, u8), Entries> = StdHashMap::new();
        for entry in maps.hash_entries::<PeerKey, PeerValue>(names::MAP_PEER_HOSTS)? {
            tables
                .entry((entry.key.endpoint, entry.key.generation))
                .or_default()
                .hosts
                .insert(entry);
        }
        for entry in maps.lpm_entries::<PeerKey, PeerValue>(names::MAP_PEERS)? {
            tables
                .entry((entry.key.endpoint, entry.key.generation))
                .or_default()
                .peers
                .insert(entry);
        }
        for entry in maps.hash_entries::<PortKey, PortValue>(names::MAP_PORT_EXACT)? {
            tables
                .entry((entry.key.endpoint, entry.key.generation))
                .or_default()
                .exact_ports
                .insert(entry);
        }
        for entry in maps.lpm_entries::<PortKey, PortValue>(names::MAP_PORTS)? {
            tables
                .entry((entry.key.endpoint, entry.key.generation))
                .or_default()
                .ports
                .insert(entry);
        }
        let mut addresses: StdHashMap<u32, HashSet<Addr>> = StdHashMap::new();
        for entry in maps.hash_entries::<AddressKey, u8>(names::MAP_ADDRESSES)? {
            addresses
                .entry(entry.key.endpoint)
                .or_default()
                .insert(entry.key.addr);
        }
        Ok(Self {
            states,
            tables,
            addresses,
        })
    }
}

/// The maps pinned in one directory, opened by name with descriptors of their own.
struct Pinned(PathBuf);

impl Pinned {
    fn typed<T>(&self, name: &'static str, kind: fn(MapData) -> Map) -> Result<T, DatapathError>
    where
        T: TryFrom<Map, Error = aya::maps::MapError>,
    {
        let data = MapData::from_pin(self.0.join(name)).map_err(map_error(name))?;
        T::try_from(kind(data)).map_err(map_error(name))
    }

    /// Every entry of the hash map `name`.
    fn hash_entries<K: Pod, V: Pod>(
        &self,
        name: &'static str,
    ) -> Result<Vec<HashEntry<K, V>>, DatapathError> {
        let map: HashMap<MapData, K, V> = self.typed(name, Map::HashMap)?;
        map.iter()
            .map(|entry| {
                let (key, value) = entry.map_err(map_error(name))?;
                Ok(HashEntry { key, value })
            })
            .collect()
    }

    /// Every entry of the LPM trie `name`.
    fn lpm_entries<K: Pod, V: Pod>(
        &self,
        name: &'static str,
    ) -> Result<Vec<LpmEntry<K, V>>, DatapathError> {
        let map: LpmTrie<MapData, K, V> = self.typed(name, Map::LpmTrie)?;
        map.iter()
            .map(|entry| {
                let (key, value) = entry.map_err(map_error(name))?;
                Ok(LpmEntry {
                    prefix_len: key.prefix_len(),
                    key: key.data(),
                    value,
                })
            })
            .collect()
    }
}

impl Datapath {
    /// What in `snapshot` differs from `endpoint` programmed with `policy`, `addresses`
    /// and `settings` (nothing when it is in step). When something does, this process
    /// forgets which entries it wrote for the endpoint, so the next [`Datapath::program`]
    /// finds what to replace by scanning the maps rather than trusting its records.
    pub fn drift(
        &mut self,
        snapshot: &TableSnapshot,
        endpoint: &EndpointKey,
        policy: &EndpointPolicy,
        addresses: &[IpAddr],
        settings: EndpointSettings,
    ) -> Result<Vec<Drift>, DatapathError> {
        let config = self
            .endpoint_config(endpoint)?
            .ok_or(DatapathError::NotProgrammed(*endpoint))?;
        let (id, live) = (config.id, config.generation as u8);
        if snapshot.states.get(&id) != Some(&config.state()) {
            // Reprogrammed while the snapshot was read (or after): not judged on it.
            return Ok(Vec::new());
        }
        let tables = compile::compile(id, live, policy);
        let mut found = Vec::new();
        if config.flags != tables.flags | settings.flags() {
            found.push(Drift::Flags);
        }
        let empty = Entries::default();
        if snapshot.tables.get(&(id, live)).unwrap_or(&empty) != &Entries::from(tables) {
            found.push(Drift::LiveTables);
        }
        if snapshot
            .tables
            .get(&(id, live ^ 1))
            .is_some_and(|idle| idle != &empty)
        {
            found.push(Drift::IdleTables);
        }
        let want: HashSet<Addr> = addresses.iter().map(|a| addr16(*a)).collect();
        if snapshot.addresses.get(&id).unwrap_or(&HashSet::new()) != &want {
            found.push(Drift::Addresses);
        }
        if !found.is_empty() {
            self.written.forget(id);
        }
        Ok(found)
    }

    /// Removes the table entries and addresses in `snapshot` whose endpoint id no slot is
    /// given to, and returns how many ids had some.
    pub fn remove_orphans(&mut self, snapshot: &TableSnapshot) -> Result<usize, DatapathError> {
        let assigned: HashSet<u32> = self.slots.assigned().map(|(_, id)| *id).collect();
        let orphans: HashSet<u32> = snapshot
            .tables
            .keys()
            .map(|(id, _)| *id)
            .chain(snapshot.addresses.keys().copied())
            .filter(|id| !assigned.contains(id))
            .collect();
        for id in &orphans {
            self.remove_all_of(*id)?;
        }
        Ok(orphans.len())
    }
}
