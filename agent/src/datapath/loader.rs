//! Loading the object: maps pinned by name (an existing pin is reused, which is how a
//! restarted agent adopts the maps its attached programs read), aya-log forwarded to
//! `tracing`, and one instance of the classifiers per slot, its slot compiled in (taken
//! from the [`Pool`] when it has one ready).
//!
//! aya 0.14 offers no way to load an instance from an object parsed once: every load
//! parses the ELF and the kernel's BTF again. The pool keeps that, and the verification,
//! off the path that attaches an interface.
use std::collections::HashMap;

use aya::{maps::Map, programs::SchedClassifier, Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use netwarden_common::{names, EndpointKey};
use tokio::io::{unix::AsyncFd, Interest};

use super::{
    object,
    pins::PinRoot,
    pool::{Instance, Pool, DEFAULT_POOL_SIZE},
    slots::Slots,
    tables::WrittenIndex,
    Datapath, DatapathError,
};

/// How a datapath loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatapathOptions {
    /// Program instances kept loaded and verified ahead of time (0: load each one when
    /// an interface needs it).
    pub pool_size: usize,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        Self {
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

impl Datapath {
    /// Loads the datapath pinned under /sys/fs/bpf/netwarden. Needs a tokio runtime.
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_at(PinRoot::default())
    }

    /// [`Datapath::load_with`] the default options.
    pub fn load_at(pins: PinRoot) -> Result<Self, DatapathError> {
        Self::load_with(pins, DatapathOptions::default())
    }

    /// Loads the embedded object with its maps pinned under `pins` (adopting maps already
    /// pinned there, and the slots recorded in them), forwards the programs' logs and
    /// starts filling the instance pool.
    pub fn load_with(pins: PinRoot, options: DatapathOptions) -> Result<Self, DatapathError> {
        pins.create()?;
        let mut shared = load_object(&pins, None)?;
        // The logger takes the (pinned) log map out of this load; instances write to it.
        let logger = EbpfLogger::init(&mut shared).map_err(|e| DatapathError::Reader {
            what: "logs",
            reason: e.to_string(),
        })?;
        let log_pump = spawn_log_pump(logger)?;
        let mut slots = match shared.map(names::MAP_ENDPOINTS) {
            Some(Map::Array(data)) => Slots::open(data)?,
            _ => {
                return Err(DatapathError::Missing {
                    kind: "array map",
                    name: names::MAP_ENDPOINTS,
                })
            }
        };
        let pool = Pool::start(options.pool_size, &pins, &mut slots);
        Ok(Self {
            shared,
            instances: HashMap::new(),
            slots,
            pool,
            pins,
            attach_mode: super::AttachMode::default(),
            written: WrittenIndex::default(),
            log_pump,
        })
    }

    /// Blocks until the instance pool is full. Never needed for correctness (the pool
    /// fills in the background, and an attach that finds it empty loads its own); for
    /// measurements and for warming up before a burst of attaches.
    pub fn fill_pool(&mut self) {
        self.pool.fill(&mut self.slots);
    }

    /// The classifiers of `endpoint`: its own if loaded, else a pooled instance (which
    /// gives the endpoint its slot), else one loaded now.
    pub(super) fn instance(&mut self, endpoint: &EndpointKey) -> Result<&mut Ebpf, DatapathError> {
        if !self.instances.contains_key(endpoint) {
            let instance = match self.slots.slot_of(endpoint) {
                // Given a slot earlier (programmed before attaching, or by an earlier
                // agent): an instance of that very slot and epoch.
                Some(slot) => Instance {
                    slot,
                    epoch: self.slots.epoch(slot),
                    ebpf: load_instance(&self.pins, slot, self.slots.epoch(slot))?,
                },
                None => self.new_instance(endpoint)?,
            };
            self.instances.insert(*endpoint, instance);
        }
        Ok(&mut self
            .instances
            .get_mut(endpoint)
            .expect("inserted above")
            .ebpf)
    }

    /// `endpoint`'s slot, given now (with an instance for it) if it has none.
    pub(super) fn slot(&mut self, endpoint: &EndpointKey) -> Result<u32, DatapathError> {
        if let Some(slot) = self.slots.slot_of(endpoint) {
            return Ok(slot);
        }
        let instance = self.new_instance(endpoint)?;
        let slot = instance.slot;
        self.instances.insert(*endpoint, instance);
        Ok(slot)
    }

    /// An instance for a new slot, assigned to `endpoint`.
    fn new_instance(&mut self, endpoint: &EndpointKey) -> Result<Instance, DatapathError> {
        let instance = match self.pool.take(&mut self.slots) {
            Some(instance) => instance,
            None => {
                let (slot, epoch) = self.slots.reserve()?;
                match load_instance(&self.pins, slot, epoch) {
                    Ok(ebpf) => Instance { slot, epoch, ebpf },
                    Err(e) => {
                        self.slots.unreserve(slot);
                        return Err(e);
                    }
                }
            }
        };
        self.slots.assign(endpoint, instance.slot, instance.epoch);
        self.written.fresh(instance.slot);
        Ok(instance)
    }
}

/// Both classifiers for `slot` at `epoch`, loaded and verified.
pub(super) fn load_instance(pins: &PinRoot, slot: u32, epoch: u32) -> Result<Ebpf, DatapathError> {
    let mut ebpf = load_object(pins, Some((slot, epoch)))?;
    for name in [names::PROG_INGRESS, names::PROG_EGRESS] {
        load_program(&mut ebpf, name)?;
    }
    Ok(ebpf)
}

/// The object with the maps under `pins`; with a (slot, epoch), those compiled in.
fn load_object(pins: &PinRoot, instance: Option<(u32, u32)>) -> Result<Ebpf, DatapathError> {
    let mut loader = EbpfLoader::new();
    loader
        .default_map_pin_directory(pins.maps())
        .map_pin_path(names::MAP_LOGS, pins.maps().join(names::MAP_LOGS));
    if let Some((slot, epoch)) = &instance {
        loader
            .override_global(names::GLOBAL_SLOT, slot, true)
            .override_global(names::GLOBAL_EPOCH, epoch, true);
    }
    loader
        .load(object::BYTES)
        .map_err(|e| DatapathError::Load(Box::new(e)))
}

pub(super) fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DatapathError> {
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
