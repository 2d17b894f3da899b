//! The datapath's pinned tables, opened the way any other process with access to bpffs
//! could: drift tests change them behind the datapath's back.
use std::path::PathBuf;

use aya::maps::{Array, HashMap, Map, MapData};
use netwarden_agent::datapath::pins::PinRoot;
use netwarden_common::{names, AddressKey, EndpointSlot, PeerKey, PeerValue};

/// The pinned maps under one bpffs root.
pub struct PinnedTables {
    maps: PathBuf,
}

impl PinnedTables {
    pub fn new(root: &PinRoot) -> Self {
        Self { maps: root.maps() }
    }

    fn open(&self, name: &str) -> MapData {
        MapData::from_pin(self.maps.join(name)).unwrap_or_else(|e| panic!("pinned map {name}: {e}"))
    }

    /// `PEER_HOSTS`: one entry per allowed peer host, per endpoint and generation.
    pub fn peer_hosts(&self) -> HashMap<MapData, PeerKey, PeerValue> {
        HashMap::try_from(Map::HashMap(self.open(names::MAP_PEER_HOSTS))).expect("PEER_HOSTS")
    }

    /// `ADDRESSES`: the addresses assigned to each endpoint (anti-spoofing).
    pub fn addresses(&self) -> HashMap<MapData, AddressKey, u8> {
        HashMap::try_from(Map::HashMap(self.open(names::MAP_ADDRESSES))).expect("ADDRESSES")
    }

    /// `ENDPOINTS`: the slots, with each endpoint's packed configuration.
    pub fn endpoints(&self) -> Array<MapData, EndpointSlot> {
        Array::try_from(Map::Array(self.open(names::MAP_ENDPOINTS))).expect("ENDPOINTS")
    }

    /// Every `PEER_HOSTS` entry.
    pub fn peer_host_entries(&self) -> Vec<(PeerKey, PeerValue)> {
        self.peer_hosts()
            .iter()
            .map(|entry| entry.expect("PEER_HOSTS entry"))
            .collect()
    }
}
