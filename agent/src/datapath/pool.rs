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
/// without loading anything; beyond it, each loads its own at the attaching thread's
/// priority.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The classifiers loaded for one slot and epoch (`T`: what a load gives, the classifiers
/// outside tests).
pub(super) struct Instance<T = Ebpf> {
    pub(super) slot: u32,
    pub(super) epoch: u32,
    pub(super) ebpf: T,
}

type Loaded<T> = (u32, u32, Result<T, DatapathError>);

pub(super) struct Pool<T = Ebpf> {
    size: usize,
    ready: Vec<Instance<T>>,
    /// Loads asked of the worker and not collected yet.
    in_flight: usize,
    jobs: Option<Sender<(u32, u32)>>,
    done: Receiver<Loaded<T>>,
    worker: Option<JoinHandle<()>>,
}

impl Pool {
    /// Starts the worker (none for a pool of size 0) and asks it for `size` instances.
    pub(super) fn start(size: usize, pins: &PinRoot, slots: &mut Slots) -> Self {
        let pins = pins.clone();
        Self::with_loader(size, slots, move |slot, epoch| {
            loader::load_instance(&pins, slot, epoch)
        })
    }
}

impl<T: Send + 'static> Pool<T> {
    /// [`Pool::start`] with `load` as the worker's job.
    fn with_loader(
        size: usize,
        slots: &mut Slots,
        load: impl Fn(u32, u32) -> Result<T, DatapathError> + Send + 'static,
    ) -> Self {
        let (jobs, queue) = mpsc::channel::<(u32, u32)>();
        let (finished, done) = mpsc::channel();
        let spawn = || {
            std::thread::Builder::new()
                .name("nw-ebpf-pool".into())
                .spawn(move || {
                    lower_priority();
                    for (slot, epoch) in queue {
                        if finished.send((slot, epoch, load(slot, epoch))).is_err() {
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

    /// A ready instance; `None` when none is ready (the caller loads one itself).
    ///
    /// Never waits for a load under way: the worker runs at the lowest priority, so on a
    /// busy node an attach waiting for it would wait for every other process first (an
    /// ADD took seconds that way with the CPUs saturated). Loads under way still land in
    /// the pool for the attaches after.
    pub(super) fn take(&mut self, slots: &mut Slots) -> Option<Instance<T>> {
        while let Ok(loaded) = self.done.try_recv() {
            self.collect(loaded, slots);
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

    fn collect(&mut self, (slot, epoch, loaded): Loaded<T>, slots: &mut Slots) {
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

impl<T> Drop for Pool<T> {
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use netwarden_common::MAX_SLOTS;

    use super::*;
    use crate::datapath::slots::tests::shared;

    /// What the test loaders fail with.
    fn refused() -> DatapathError {
        DatapathError::Missing {
            kind: "program",
            name: "refused by the test",
        }
    }

    #[test]
    fn an_attach_never_waits_for_a_load_under_way() {
        let mut slots = shared()();
        // The worker loads only when the test lets it, so every load stays under way.
        let (gate, gated) = sync_channel::<()>(0);
        let mut pool = Pool::with_loader(2, &mut slots, move |_, _| {
            gated.recv().map_err(|_| refused())
        });
        assert!(pool.take(&mut slots).is_none(), "nothing is ready yet");
        assert_eq!(pool.in_flight, 2, "the loads under way go on");

        // Let both loads finish: the next attach takes one and a refill is asked for.
        gate.send(()).unwrap();
        gate.send(()).unwrap();
        let taken = (0..).find_map(|_| pool.take(&mut slots)).unwrap();
        assert!(taken.slot >= 1, "slot 0 is never given out");
        assert_eq!(pool.ready.len() + pool.in_flight, 2, "refilled to size");
        // Before the pool: its drop joins the worker, which waits at the gate.
        drop(gate);
    }

    #[test]
    fn a_failed_preload_gives_its_slot_back() {
        let mut slots = shared()();
        let mut pool = Pool::<()>::with_loader(1, &mut slots, |_, _| Err(refused()));
        pool.fill(&mut slots);
        assert!(pool.take(&mut slots).is_none(), "nothing was loaded");
        // Every slot but 0 can still be given out, the failed load's included. (The take
        // above asked for no refill: only a taken instance does.)
        let given = std::iter::from_fn(|| slots.reserve().ok()).count();
        assert_eq!(given, MAX_SLOTS as usize - 1);
    }
}
