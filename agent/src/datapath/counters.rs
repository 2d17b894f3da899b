//! Per-endpoint packet and byte counters, summed over CPUs.
use aya::maps::PerCpuHashMap;
use netwarden_common::{names, verdict, Counter, CounterKey, EndpointKey};

use super::{compile::direction_byte, rules::Direction, Datapath, DatapathError};

/// Packets and bytes one direction allowed and denied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionCounters {
    pub allowed: Counter,
    pub denied: Counter,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    pub ingress: DirectionCounters,
    pub egress: DirectionCounters,
}

impl Datapath {
    /// The counters of a programmed endpoint.
    pub fn counters(&mut self, endpoint: &EndpointKey) -> Result<EndpointCounters, DatapathError> {
        let id = self
            .endpoint_config(endpoint)?
            .ok_or(DatapathError::NotProgrammed(*endpoint))?
            .id;
        let map: PerCpuHashMap<_, CounterKey, Counter> = self.typed_map(names::MAP_COUNTERS)?;
        let read = |direction: Direction, v: u8| -> Result<Counter, DatapathError> {
            let key = CounterKey {
                endpoint: id,
                direction: direction_byte(direction),
                verdict: v,
                _pad: [0; 2],
            };
            match map.get(&key, 0) {
                Ok(values) => Ok(values.iter().fold(Counter::default(), |sum, c| Counter {
                    packets: sum.packets + c.packets,
                    bytes: sum.bytes + c.bytes,
                })),
                Err(aya::maps::MapError::KeyNotFound) => Ok(Counter::default()),
                Err(source) => Err(DatapathError::Map {
                    map: names::MAP_COUNTERS,
                    source: Box::new(source),
                }),
            }
        };
        let direction = |d| -> Result<DirectionCounters, DatapathError> {
            Ok(DirectionCounters {
                allowed: read(d, verdict::ALLOW)?,
                denied: read(d, verdict::DENY)?,
            })
        };
        Ok(EndpointCounters {
            ingress: direction(Direction::Ingress)?,
            egress: direction(Direction::Egress)?,
        })
    }
}
