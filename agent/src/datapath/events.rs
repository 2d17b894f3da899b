//! Verdict events from the `EVENTS` ring buffer, as typed values.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use netwarden_common::{names, reason, verdict, EventBudget, VerdictEvent};
use tokio::io::unix::AsyncFd;

use super::{rules::Direction, Datapath, DatapathError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

/// Why a packet got its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NotIsolated,
    Rule,
    Established,
    NoMatchingRule,
    SpoofedSource,
    Malformed,
    Revoked,
    NotProgrammed,
}

impl Reason {
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            reason::NOT_ISOLATED => Self::NotIsolated,
            reason::RULE => Self::Rule,
            reason::ESTABLISHED => Self::Established,
            reason::NO_MATCHING_RULE => Self::NoMatchingRule,
            reason::SPOOFED_SOURCE => Self::SpoofedSource,
            reason::MALFORMED => Self::Malformed,
            reason::REVOKED => Self::Revoked,
            reason::NOT_PROGRAMMED => Self::NotProgrammed,
            _ => return None,
        })
    }
}

/// One verdict the datapath reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathEvent {
    /// The endpoint id (`EndpointConfig::id`); 0 for a not-programmed interface.
    pub endpoint: u32,
    pub direction: Direction,
    pub verdict: Verdict,
    pub reason: Reason,
    /// IP protocol number; 0 for non-IP frames.
    pub protocol: u8,
    /// `None` for non-IP frames and broken IP headers.
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// Ports for TCP/UDP/SCTP; type and code for ICMP.
    pub src_port: u16,
    pub dst_port: u16,
}

impl DatapathEvent {
    fn decode(raw: &VerdictEvent) -> Option<Self> {
        let address = |bytes: [u8; 16]| match raw.family {
            4 => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[12], bytes[13], bytes[14], bytes[15],
            ))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
            _ => None,
        };
        Some(Self {
            endpoint: raw.endpoint,
            direction: if raw.direction == netwarden_common::direction::INGRESS {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            verdict: if raw.verdict == verdict::DENY {
                Verdict::Deny
            } else {
                Verdict::Allow
            },
            reason: Reason::from_code(raw.reason)?,
            protocol: raw.protocol,
            src: address(raw.src),
            dst: address(raw.dst),
            src_port: raw.src_port,
            dst_port: raw.dst_port,
        })
    }
}

/// A reader of the verdict ring buffer; wakes when the kernel submits a record.
pub struct VerdictEvents {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl VerdictEvents {
    /// The next event, waiting for one if none is queued.
    pub async fn next(&mut self) -> Result<DatapathEvent, DatapathError> {
        loop {
            let mut ready = self
                .ring
                .readable_mut()
                .await
                .map_err(|e| DatapathError::Reader {
                    what: "events",
                    reason: e.to_string(),
                })?;
            while let Some(item) = ready.get_inner_mut().next() {
                if item.len() < std::mem::size_of::<VerdictEvent>() {
                    continue;
                }
                // SAFETY: the record is a VerdictEvent the program wrote; read unaligned.
                let raw = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<VerdictEvent>()) };
                match DatapathEvent::decode(&raw) {
                    Some(event) => return Ok(event),
                    None => tracing::warn!(
                        "skipping a verdict event with unknown reason {}",
                        raw.reason
                    ),
                }
            }
            ready.clear_ready();
        }
    }
}

impl Datapath {
    /// Opens the verdict ring buffer (from its pin, so it is independent of `self`).
    /// One reader at a time: records are consumed by whoever reads them first.
    pub fn events(&self) -> Result<VerdictEvents, DatapathError> {
        let path = self.pins.maps().join(names::MAP_EVENTS);
        let data = MapData::from_pin(&path).map_err(|e| DatapathError::Pin {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(|source| DatapathError::Map {
            map: names::MAP_EVENTS,
            source: Box::new(source),
        })?;
        // SAFETY: the ring buffer owns its fd and keeps it open, unchanged, for as long as
        // the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| DatapathError::Reader {
            what: "events",
            reason: e.to_string(),
        })?;
        Ok(VerdictEvents { ring })
    }

    /// Events not sent because a CPU's budget was spent, summed over CPUs.
    pub fn events_suppressed(&mut self) -> Result<u64, DatapathError> {
        let budget: PerCpuArray<_, EventBudget> = self.typed_map(names::MAP_EVENT_BUDGET)?;
        let values = budget.get(&0, 0).map_err(|source| DatapathError::Map {
            map: names::MAP_EVENT_BUDGET,
            source: Box::new(source),
        })?;
        Ok(values.iter().map(|b| b.suppressed).sum())
    }
}
