//! Per-endpoint packet and byte counters, summed over CPUs.
use aya::maps::{PerCpuArray, PerCpuValues};
use netwarden_common::{counter_index, names, verdict, Counter, EndpointKey};

use super::{
    compile::direction_byte, rules::Direction, tables::map_error, Datapath, DatapathError,
};

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

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];
const VERDICTS: [u8; 2] = [verdict::ALLOW, verdict::DENY];

impl Datapath {
    /// The counters of a programmed endpoint.
    pub fn counters(&mut self, endpoint: &EndpointKey) -> Result<EndpointCounters, DatapathError> {
        let id = self
            .endpoint_config(endpoint)?
            .ok_or(DatapathError::NotProgrammed(*endpoint))?
            .id;
        let map: PerCpuArray<_, Counter> = self.typed_map(names::MAP_COUNTERS)?;
        let read = |direction: Direction, v: u8| -> Result<Counter, DatapathError> {
            let values = map
                .get(&counter_index(id, direction_byte(direction), v), 0)
                .map_err(map_error(names::MAP_COUNTERS))?;
            Ok(values.iter().fold(Counter::default(), |sum, c| Counter {
                packets: sum.packets + c.packets,
                bytes: sum.bytes + c.bytes,
            }))
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

    /// Zeroes slot `id`'s counters on every CPU: the next endpoint in the slot starts
    /// from nothing.
    pub(super) fn reset_counters(&mut self, id: u32) -> Result<(), DatapathError> {
        let mut map: PerCpuArray<_, Counter> = self.typed_map(names::MAP_COUNTERS)?;
        let failed = map_error(names::MAP_COUNTERS);
        for d in DIRECTIONS {
            for v in VERDICTS {
                let index = counter_index(id, direction_byte(d), v);
                let cpus = map.get(&index, 0).map_err(&failed)?.len();
                let zeros = PerCpuValues::try_from(vec![Counter::default(); cpus])
                    .map_err(|e| failed(e.into()))?;
                map.set(index, zeros, 0).map_err(&failed)?;
            }
        }
        Ok(())
    }
}
