//! The kernel half of enforcement: loads netwarden's tc classifiers, attaches them to pod
//! interfaces inside their network namespaces, and writes the maps they read.
pub mod compile;
pub mod model;
mod object;
pub mod rules;

use std::{net::Ipv4Addr, path::PathBuf};

use aya::{
    maps::HashMap,
    programs::{tc, SchedClassifier, TcAttachType},
    util::KernelVersion,
    Ebpf,
};
use aya_log::EbpfLogger;
use netwarden_cni::InterfaceName;
use netwarden_common::{names, Ipv4Key};
use tokio::io::{unix::AsyncFd, Interest};

use crate::netns::{self, NetnsError};

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
    #[error("cannot attach to {target}: {source}")]
    Attach {
        target: InterfaceTarget,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("cannot detach from {target}: {source}")]
    Detach {
        target: InterfaceTarget,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot start reading eBPF logs: {0}")]
    Logs(String),
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

/// A program attached to an interface; give it back to [`Datapath::detach`].
#[derive(Debug)]
pub struct Attachment {
    target: InterfaceTarget,
    link: tc::SchedClassifierLinkId,
}

impl Attachment {
    pub fn target(&self) -> &InterfaceTarget {
        &self.target
    }
}

/// The loaded eBPF object. Load it once per process.
pub struct Datapath {
    ebpf: Ebpf,
    log_pump: tokio::task::JoinHandle<()>,
}

impl Datapath {
    /// Loads the embedded eBPF object and its classifier, and forwards the programs' logs
    /// (aya-log) to `tracing`. Must be called inside a tokio runtime.
    pub fn load() -> Result<Self, DatapathError> {
        let mut ebpf = Ebpf::load(object::BYTES).map_err(|e| DatapathError::Load(Box::new(e)))?;
        // The logger must exist before any program loads: it owns the log map they use.
        let logger = EbpfLogger::init(&mut ebpf).map_err(|e| DatapathError::Logs(e.to_string()))?;
        let log_pump = spawn_log_pump(logger)?;
        classifier(&mut ebpf)?
            .load()
            .map_err(|source| DatapathError::Program {
                program: names::PROG_INGRESS,
                source: Box::new(source),
            })?;
        Ok(Self { ebpf, log_pump })
    }

    /// Attaches the ingress classifier to `target` (TCX where the kernel has it, else clsact).
    pub fn attach(&mut self, target: &InterfaceTarget) -> Result<Attachment, DatapathError> {
        let program = classifier(&mut self.ebpf)?;
        let ifname = target.ifname.as_str();
        let link = netns::run_in(&target.netns, || {
            if !has_tcx() {
                // Without TCX, cls_bpf needs the clsact qdisc; it may already be there.
                let _ = tc::qdisc_add_clsact(ifname);
            }
            program.attach(ifname, TcAttachType::Ingress)
        })?
        .map_err(|source| DatapathError::Attach {
            target: target.clone(),
            source: Box::new(source),
        })?;
        Ok(Attachment {
            target: target.clone(),
            link,
        })
    }

    /// Removes the program from the interface it was attached to.
    pub fn detach(&mut self, attachment: Attachment) -> Result<(), DatapathError> {
        let Attachment { target, link } = attachment;
        classifier(&mut self.ebpf)?
            .detach(link)
            .map_err(|source| DatapathError::Detach {
                target,
                source: Box::new(source),
            })
    }

    /// Drops every IPv4 packet from `source` on attached interfaces.
    pub fn deny_source(&mut self, source: Ipv4Addr) -> Result<(), DatapathError> {
        self.deny_map()?
            .insert(Ipv4Key::new(source.octets()), 1, 0)
            .map_err(|source| DatapathError::Map {
                map: names::MAP_DENY_SOURCES_V4,
                source: Box::new(source),
            })
    }

    /// Stops dropping packets from `source`.
    pub fn allow_source(&mut self, source: Ipv4Addr) -> Result<(), DatapathError> {
        self.deny_map()?
            .remove(&Ipv4Key::new(source.octets()))
            .map_err(|source| DatapathError::Map {
                map: names::MAP_DENY_SOURCES_V4,
                source: Box::new(source),
            })
    }

    fn deny_map(&mut self) -> Result<HashMap<&mut aya::maps::MapData, Ipv4Key, u8>, DatapathError> {
        let map = self
            .ebpf
            .map_mut(names::MAP_DENY_SOURCES_V4)
            .ok_or(DatapathError::Missing {
                kind: "map",
                name: names::MAP_DENY_SOURCES_V4,
            })?;
        HashMap::try_from(map).map_err(|source| DatapathError::Map {
            map: names::MAP_DENY_SOURCES_V4,
            source: Box::new(source),
        })
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.log_pump.abort();
    }
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DatapathError> {
    let missing = DatapathError::Missing {
        kind: "program",
        name: names::PROG_INGRESS,
    };
    ebpf.program_mut(names::PROG_INGRESS)
        .ok_or(missing)?
        .try_into()
        .map_err(|source| DatapathError::Program {
            program: names::PROG_INGRESS,
            source: Box::new(source),
        })
}

/// Reads the programs' log ring buffer whenever it has records, off the packet path.
fn spawn_log_pump(
    logger: EbpfLogger<&'static dyn log::Log>,
) -> Result<tokio::task::JoinHandle<()>, DatapathError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| DatapathError::Logs(format!("no tokio runtime: {e}")))?;
    let mut logs = {
        let _guard = runtime.enter();
        // SAFETY: the logger owns its ring buffer's fd and keeps it open, unchanged, for as
        // long as the AsyncFd owns the logger.
        unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
            .map_err(|e| DatapathError::Logs(e.to_string()))?
    };
    Ok(runtime.spawn(async move {
        while let Ok(mut ready) = logs.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    }))
}

/// TCX (kernel 6.6+) attaches without a qdisc; older kernels need clsact + cls_bpf.
fn has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v.code() >= KernelVersion::new(6, 6, 0).code())
}
