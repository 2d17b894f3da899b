//! Loading the object: maps pinned by name (an existing pin is reused, which is how a
//! restarted agent adopts the maps its attached programs read), aya-log forwarded to
//! `tracing`, and one instance of the classifiers per endpoint, its key compiled in.
use std::collections::{hash_map::Entry, HashMap};

use aya::{programs::SchedClassifier, Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use netwarden_common::{names, EndpointKey};
use tokio::io::{unix::AsyncFd, Interest};

use super::{object, pins::PinRoot, tables::WrittenIndex, Datapath, DatapathError};

impl Datapath {
    /// Loads the datapath pinned under /sys/fs/bpf/netwarden. Needs a tokio runtime.
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_at(PinRoot::default())
    }

    /// Loads the embedded object with its maps pinned under `pins` (adopting maps already
    /// pinned there) and the pass-through program, and forwards the programs' logs.
    pub fn load_at(pins: PinRoot) -> Result<Self, DatapathError> {
        pins.create()?;
        let mut shared = load_object(&pins, None)?;
        // The logger takes the (pinned) log map out of this load; instances write to it.
        let logger = EbpfLogger::init(&mut shared).map_err(|e| DatapathError::Reader {
            what: "logs",
            reason: e.to_string(),
        })?;
        let log_pump = spawn_log_pump(logger)?;
        load_program(&mut shared, names::PROG_PASSTHROUGH)?;
        Ok(Self {
            shared,
            instances: HashMap::new(),
            pins,
            attach_mode: super::AttachMode::default(),
            written: WrittenIndex::default(),
            log_pump,
        })
    }

    /// The classifiers of `endpoint`, loaded on first use.
    pub(super) fn instance(&mut self, endpoint: &EndpointKey) -> Result<&mut Ebpf, DatapathError> {
        match self.instances.entry(*endpoint) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => {
                let mut ebpf = load_object(&self.pins, Some(endpoint))?;
                for name in [names::PROG_INGRESS, names::PROG_EGRESS] {
                    load_program(&mut ebpf, name)?;
                }
                Ok(entry.insert(ebpf))
            }
        }
    }
}

/// The object with the maps under `pins`; with an endpoint, that endpoint's key compiled in.
fn load_object(pins: &PinRoot, endpoint: Option<&EndpointKey>) -> Result<Ebpf, DatapathError> {
    let mut loader = EbpfLoader::new();
    loader
        .default_map_pin_directory(pins.maps())
        .map_pin_path(names::MAP_LOGS, pins.maps().join(names::MAP_LOGS));
    if let Some(key) = endpoint {
        loader
            .override_global(names::GLOBAL_NETNS_COOKIE, &key.netns_cookie, true)
            .override_global(names::GLOBAL_IFINDEX, &key.ifindex, true);
    }
    loader
        .load(object::BYTES)
        .map_err(|e| DatapathError::Load(Box::new(e)))
}

fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DatapathError> {
    classifier(ebpf, name)?
        .load()
        .map_err(|source| DatapathError::Program {
            program: name,
            source: Box::new(source),
        })
}

pub(super) fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| DatapathError::Program {
            program: name,
            source: Box::new(source),
        })
}

/// Reads the programs' log ring buffer whenever it has records, off the packet path.
fn spawn_log_pump(
    logger: EbpfLogger<&'static dyn log::Log>,
) -> Result<tokio::task::JoinHandle<()>, DatapathError> {
    let failed = |reason: String| DatapathError::Reader {
        what: "logs",
        reason,
    };
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| failed(format!("no tokio runtime: {e}")))?;
    let mut logs = {
        let _guard = runtime.enter();
        // SAFETY: the logger owns its ring buffer's fd and keeps it open, unchanged, for as
        // long as the AsyncFd owns the logger.
        unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
            .map_err(|e| failed(e.to_string()))?
    };
    Ok(runtime.spawn(async move {
        while let Ok(mut ready) = logs.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    }))
}
