//! How many entries each table holds, for the agent's metrics.
use aya::maps::{lpm_trie::LpmTrie, HashMap, MapData};
use netwarden_common::{
    names, AddressKey, FlowKey, FlowState, PeerKey, PeerValue, PortKey, PortValue,
};

use super::{Datapath, DatapathError};

impl Datapath {
    /// `(map name, entries)` for the endpoint, address, peer, port and flow tables
    /// (`ENDPOINTS`: the slots given to interfaces). Counting walks the keys: meant for a
    /// scrape every few seconds, not a hot path.
    pub fn occupancy(&mut self) -> Result<Vec<(&'static str, usize)>, DatapathError> {
        let endpoints = self.slots.assigned().count();
        let addresses: HashMap<&mut MapData, AddressKey, u8> =
            self.typed_map(names::MAP_ADDRESSES)?;
        let addresses = addresses.keys().count();
        let hosts: HashMap<&mut MapData, PeerKey, PeerValue> =
            self.typed_map(names::MAP_PEER_HOSTS)?;
        let hosts = hosts.keys().count();
        let peers: LpmTrie<&mut MapData, PeerKey, PeerValue> = self.typed_map(names::MAP_PEERS)?;
        let peers = peers.keys().count();
        let exact: HashMap<&mut MapData, PortKey, PortValue> =
            self.typed_map(names::MAP_PORT_EXACT)?;
        let exact = exact.keys().count();
        let ports: LpmTrie<&mut MapData, PortKey, PortValue> = self.typed_map(names::MAP_PORTS)?;
        let ports = ports.keys().count();
        // aya reads an LRU hash through the plain HashMap type.
        let flows: HashMap<&mut MapData, FlowKey, FlowState> =
            self.typed_map(names::MAP_CONNTRACK)?;
        let flows = flows.keys().count();
        Ok(vec![
            (names::MAP_ENDPOINTS, endpoints),
            (names::MAP_ADDRESSES, addresses),
            (names::MAP_PEER_HOSTS, hosts),
            (names::MAP_PEERS, peers),
            (names::MAP_PORT_EXACT, exact),
            (names::MAP_PORTS, ports),
            (names::MAP_CONNTRACK, flows),
        ])
    }
}
