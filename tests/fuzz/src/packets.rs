//! The endpoints the packet targets judge frames on, and how an input picks one.
use std::collections::BTreeSet;

use netwarden_agent::datapath::{
    compile::compile,
    model::{packet::EndpointState, scenario::Scenario},
    rules::Direction,
};
use netwarden_common::EndpointConfig;

/// Scenarios (random policies, addresses, anti-spoofing) the endpoints are made from.
pub const SCENARIO_SEEDS: [u64; 4] = [0x6e77_0000, 0x6e77_0001, 0x6e77_0002, 0x6e77_0003];

/// One input: the endpoint (index into [`SCENARIO_SEEDS`]), the direction, the frame.
pub struct PacketInput<'a> {
    pub endpoint: usize,
    pub direction: Direction,
    pub frame: &'a [u8],
}

impl<'a> PacketInput<'a> {
    /// The first byte picks endpoint (low bits) and direction (bit 7); the rest is the
    /// Ethernet frame.
    pub fn new(data: &'a [u8]) -> Option<Self> {
        let (&selector, frame) = data.split_first()?;
        Some(Self {
            endpoint: usize::from(selector) % SCENARIO_SEEDS.len(),
            direction: if selector & 0x80 == 0 {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            frame,
        })
    }
}

/// The model of endpoint `scenario` as programmed with `config` (the kernel's id and
/// generation, or made-up ones for the model alone).
pub fn model_state(scenario: &Scenario, config: EndpointConfig) -> EndpointState {
    let tables = compile(config.id, config.generation as u8, &scenario.policy);
    let addresses: BTreeSet<_> = scenario.addresses.iter().copied().collect();
    EndpointState::new(config, &tables, addresses)
}
