//! Program instances loaded and verified ahead of time, so that attaching an interface
//! costs no ELF parsing and no verification: a worker thread keeps `size` instances
//! ready, each for a slot reserved in [`Slots`], and loads another whenever one is taken.
//!
//! Pooled instances are not pinned: an agent that stops discards them (their slots were
//! only reserved in memory), and the next one loads its own.
use std::{
    sync::mpsc::{self, Receiver, Sender},
    thread::JoinHandle,
};

use aya::Ebpf;

use super::{loader, pins::PinRoot, slots::Slots, DatapathError};

/// How many instances wait ready by default: a burst of this many new interfaces attaches
/// without loading anything; beyond it, each waits for the load already under way.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The classifiers loaded for one slot and epoch.
pub(super) struct Instance {
    pub(super) slot: u32,
    pub(super) epoch: u32,
    pub(super) ebpf: Ebpf,
}

type Loaded = (u32, u32, Result<Ebpf, DatapathError>);

pub(super) struct Pool {
    size: usize,
    ready: Vec<Instance>,
    /// Loads asked of the worker and not collected yet.
    in_flight: usize,
    jobs: Option<Sender<(u32, u32)>>,
    done: Receiver<Loaded>,
    worker: Option<JoinHandle<()>>,
}

impl Pool {
    /// Starts the worker (none for a pool of size 0) and asks it for `size` instances.
    pub(super) fn start(size: usize, pins: &PinRoot, slots: &mut Slots) -> Self {
        let (jobs, queue) = mpsc::channel::<(u32, u32)>();
        let (finished, done) = mpsc::channel();
        let spawn = || {
            let pins = pins.clone();
            std::thread::Builder::new()
                .name("nw-ebpf-pool".into())
                .spawn(move || {
                    lower_priority();
                    for (slot, epoch) in queue {
                        let loaded = loader::load_instance(&pins, slot, epoch);
                        if finished.send((slot, epoch, loaded)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| tracing::warn!("no eBPF pool worker, loads stay inline: {e}"))
                .ok()
        };
        let worker = if size > 0 { spawn() } else { None };
        let mut pool = Self {
            size: if worker.is_some() { size } else { 0 },
            ready: Vec::new(),
            in_flight: 0,
            jobs: Some(jobs),
            done,
            worker,
        };
        pool.refill(slots);
        pool
    }

    /// A ready instance, waiting for one under way if none is ready yet; `None` when the
    /// pool is empty and nothing is loading (the caller loads one itself).
    pub(super) fn take(&mut self, slots: &mut Slots) -> Option<Instance> {
        while let Ok(loaded) = self.done.try_recv() {
            self.collect(loaded, slots);
        }
        while self.ready.is_empty() && self.in_flight > 0 {
            match self.done.recv() {
                Ok(loaded) => self.collect(loaded, slots),
                Err(_) => break,
            }
        }
        let taken = self.ready.pop();
        if taken.is_some() {
            self.refill(slots);
        }
        taken
    }

    /// Waits until `size` instances are ready (or their loads failed).
    pub(super) fn fill(&mut self, slots: &mut Slots) {
        self.refill(slots);
        while self.in_flight > 0 {
            match self.done.recv() {
                Ok(loaded) => self.collect(loaded, slots),
                Err(_) => break,
            }
        }
    }

    /// Asks the worker for instances until `size` are ready or under way.
    fn refill(&mut self, slots: &mut Slots) {
        let Some(jobs) = &self.jobs else {
            return;
        };
        while self.ready.len() + self.in_flight < self.size {
            let Ok((slot, epoch)) = slots.reserve() else {
                return;
            };
            if jobs.send((slot, epoch)).is_err() {
                slots.unreserve(slot);
                return;
            }
            self.in_flight += 1;
        }
    }

    fn collect(&mut self, (slot, epoch, loaded): Loaded, slots: &mut Slots) {
        self.in_flight -= 1;
        match loaded {
            Ok(ebpf) => self.ready.push(Instance { slot, epoch, ebpf }),
            Err(e) => {
                // Not retried here: the next take loads inline and reports the error.
                tracing::warn!("preloading the classifiers for slot {slot}: {e}");
                slots.unreserve(slot);
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends the worker after the load it may be doing.
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Verification runs in the kernel on the loading thread's time: at the lowest priority,
/// a refill yields the CPU to the attach it was started by.
fn lower_priority() {
    // SAFETY: plain syscall; on Linux PRIO_PROCESS with 0 names the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        tracing::debug!(
            "eBPF pool worker keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
