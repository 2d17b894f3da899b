//! The kernel half of enforcement: loads netwarden's tc classifiers once, attaches them to
//! pod interfaces inside their network namespaces, and writes the tables they read.
//!
//! Everything lives under one bpffs directory ([`pins::PinRoot`]): maps, programs and the
//! TCX links (or records of the cls_bpf filters). A restarted agent adopts them, so
//! enforcement never stops while it is down and nothing is attached twice. Table layouts and the per-packet algorithm are documented
//! in `netwarden-common` and `ebpf/programs/src/main.rs`.
mod attach;
mod audit;
pub mod bench;
mod clsact;
pub mod compile;
mod counters;
mod events;
mod loader;
pub mod model;
mod object;
mod occupancy;
pub mod pins;
mod pool;
pub mod rules;
mod slots;
mod tables;
mod test_run;

use std::path::PathBuf;

use aya::Ebpf;
use netwarden_cni::InterfaceName;

pub use attach::{endpoint_key, AttachMode};
pub use audit::{Drift, TableSnapshot};
pub use counters::{DirectionCounters, EndpointCounters};
pub use events::{DatapathEvent, Reason, Verdict, VerdictEvents};
pub use loader::DatapathOptions;
pub use netwarden_common::EndpointKey;
pub use tables::{addr16, EndpointSettings};
pub use test_run::{Hook, Reference, TestRunOutcome};

use crate::netns::NetnsError;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot load the eBPF object: {0} (the agent needs root or CAP_BPF + CAP_NET_ADMIN)")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("cannot load eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("the eBPF object has no {kind} named {name}: the agent and the object were built from different sources")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("bpffs path {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error("cannot attach to {target}: {reason}")]
    Attach {
        target: InterfaceTarget,
        reason: String,
    },
    #[error("cannot detach from {target}: {reason}")]
    Detach {
        target: InterfaceTarget,
        reason: String,
    },
    #[error("cannot identify {target}: {reason}")]
    Identify {
        target: InterfaceTarget,
        reason: String,
    },
    #[error("endpoint (netns cookie {}, ifindex {}) is not programmed", .0.netns_cookie, .0.ifindex)]
    NotProgrammed(EndpointKey),
    #[error("all {} endpoint slots are in use: detach interfaces that are gone", netwarden_common::MAX_SLOTS - 1)]
    NoFreeSlot,
    #[error("cannot map eBPF map {map} into memory: {source} (pinned by a netwarden with another map layout? remove the maps directory under the bpffs root)")]
    Mmap {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("BPF_PROG_TEST_RUN of {program}: {source}")]
    TestRun {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot start reading eBPF {what}: {reason}")]
    Reader { what: &'static str, reason: String },
}

/// An interface inside a network namespace: where a pod interface lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceTarget {
    pub netns: PathBuf,
    pub ifname: InterfaceName,
}

impl std::fmt::Display for InterfaceTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interface {} in {}", self.ifname, self.netns.display())
    }
}

/// The loaded eBPF object and its pins. One per process.
///
/// `shared` is the first load: it creates (or adopts) the pinned maps, owns the log reader
/// and the pass-through program. Each endpoint gets a slot in `ENDPOINTS` and its own
/// instance of the classifiers in `instances`, with that slot compiled in (see the eBPF
/// `endpoint()` for why); every instance uses the same pinned maps. `pool` holds
/// instances loaded ahead of time for slots not given out yet.
pub struct Datapath {
    shared: Ebpf,
    instances: std::collections::HashMap<EndpointKey, pool::Instance>,
    slots: slots::Slots,
    pool: pool::Pool,
    pins: pins::PinRoot,
    attach_mode: AttachMode,
    /// Table entries written per (endpoint id, generation), so a table swap deletes
    /// exactly the old generation without scanning the maps (rebuilt by a scan for
    /// endpoints programmed by an earlier process).
    written: tables::WrittenIndex,
    log_pump: tokio::task::JoinHandle<()>,
}

impl Datapath {
    /// The bpffs directory this datapath pins under.
    pub fn pins(&self) -> &pins::PinRoot {
        &self.pins
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.log_pump.abort();
    }
}
