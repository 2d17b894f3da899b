//! Slots: which interface each program instance stands for.
//!
//! `ENDPOINTS` is an array of [`EndpointSlot`]s; every program instance carries one slot
//! number (and the slot's epoch) as constants, so its lookup is an index, not a hash. This
//! module owns the agent's mapping of that array (the map is mmap-able) and the
//! bookkeeping around it: which slot each endpoint was given, which are free, which are
//! promised to instances the pool is loading. Everything is read back from the array when
//! a datapath loads, so a restarted agent finds the slots of the interfaces it adopts.
//!
//! Writes: `key`, `epoch` and `flags` only while the slot's `state` is 0; `state` with one
//! atomic store (the classifiers read it with one 8-byte load), which is what flips an
//! endpoint's tables in one step.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    os::fd::AsFd,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;
use memmap2::{MmapOptions, MmapRaw};
use netwarden_common::{names, slot_flags, EndpointConfig, EndpointKey, EndpointSlot, MAX_SLOTS};

use super::DatapathError;

/// Bytes of the whole array.
const LEN: usize = MAX_SLOTS as usize * size_of::<EndpointSlot>();

pub(super) struct Slots {
    /// `ENDPOINTS`, all [`MAX_SLOTS`] entries, shared with the kernel.
    entries: MmapRaw,
    by_endpoint: HashMap<EndpointKey, u32>,
    /// Promised to an instance being loaded; not assigned yet.
    reserved: HashSet<u32>,
    /// Oldest freed first, so a slot is given out again as late as possible.
    free: VecDeque<u32>,
}

impl Slots {
    /// Maps `ENDPOINTS` and reads back which slots are assigned.
    pub(super) fn open(map: &MapData) -> Result<Self, DatapathError> {
        // The kernel keeps the array's pages for as long as the mapping exists; every
        // access below stays inside `LEN` and goes through atomics or plain data the
        // classifiers ignore while the slot is unprogrammed (see the module comment).
        let entries = MmapOptions::new()
            .len(LEN)
            .map_raw(&map.fd().as_fd())
            .map_err(|source| DatapathError::Mmap {
                map: names::MAP_ENDPOINTS,
                source,
            })?;
        Ok(Self::over(entries))
    }

    /// The slots in `entries` (`LEN` bytes laid out as `ENDPOINTS`).
    fn over(entries: MmapRaw) -> Self {
        let mut slots = Self {
            entries,
            by_endpoint: HashMap::new(),
            reserved: HashSet::new(),
            free: VecDeque::new(),
        };
        // Slot 0 is never given out: 0 means "no endpoint" in events.
        for slot in 1..MAX_SLOTS {
            let entry = slots.read(slot);
            if entry.flags & slot_flags::ASSIGNED != 0 {
                slots.by_endpoint.insert(entry.key, slot);
            } else {
                slots.free.push_back(slot);
            }
        }
        slots
    }

    pub(super) fn slot_of(&self, endpoint: &EndpointKey) -> Option<u32> {
        self.by_endpoint.get(endpoint).copied()
    }

    /// Assigned slots and their endpoints.
    pub(super) fn assigned(&self) -> impl Iterator<Item = (&EndpointKey, &u32)> {
        self.by_endpoint.iter()
    }

    /// Takes a free slot for an instance about to be loaded, with the epoch that
    /// instance must carry.
    pub(super) fn reserve(&mut self) -> Result<(u32, u32), DatapathError> {
        let slot = self.free.pop_front().ok_or(DatapathError::NoFreeSlot)?;
        self.reserved.insert(slot);
        Ok((slot, self.epoch(slot).wrapping_add(1)))
    }

    /// Gives back a reserved slot whose instance will not be used.
    pub(super) fn unreserve(&mut self, slot: u32) {
        if self.reserved.remove(&slot) {
            self.free.push_back(slot);
        }
    }

    /// Gives the reserved `slot` to `endpoint`, for instances of `epoch`.
    pub(super) fn assign(&mut self, endpoint: &EndpointKey, slot: u32, epoch: u32) {
        self.reserved.remove(&slot);
        let entry = self.entry(slot);
        // SAFETY: `entry` points into the mapping; the slot is unprogrammed (state 0), so
        // no classifier reads `key` or `flags`; `epoch` is stored atomically.
        unsafe {
            (*entry).key = *endpoint;
            (*entry).flags = slot_flags::ASSIGNED;
            AtomicU32::from_ptr(&raw mut (*entry).epoch).store(epoch, Ordering::Release);
        }
        self.by_endpoint.insert(*endpoint, slot);
    }

    /// The epoch of `slot`'s current (or last) assignment.
    pub(super) fn epoch(&self, slot: u32) -> u32 {
        // SAFETY: as in `assign`.
        unsafe { AtomicU32::from_ptr(&raw mut (*self.entry(slot)).epoch).load(Ordering::Acquire) }
    }

    /// The live configuration of `slot`, if programmed.
    pub(super) fn config(&self, slot: u32) -> Option<EndpointConfig> {
        EndpointConfig::from_state(slot, self.state(slot).load(Ordering::Acquire))
    }

    /// Makes `config` live on its slot in one atomic store.
    pub(super) fn set_config(&self, config: &EndpointConfig) {
        self.state(config.id)
            .store(config.state(), Ordering::Release);
    }

    /// Unprograms `slot`: from now on its classifiers drop every packet.
    pub(super) fn unprogram(&self, slot: u32) {
        self.state(slot).store(0, Ordering::Release);
    }

    /// Takes `endpoint`'s slot back (unprogrammed first); it keeps its epoch, which the
    /// next assignment bumps.
    pub(super) fn release(&mut self, endpoint: &EndpointKey) -> Option<u32> {
        let slot = self.by_endpoint.remove(endpoint)?;
        self.unprogram(slot);
        let entry = self.entry(slot);
        // SAFETY: as in `assign`.
        unsafe {
            (*entry).flags = 0;
            (*entry).key = EndpointKey::default();
        }
        self.free.push_back(slot);
        Some(slot)
    }

    fn read(&self, slot: u32) -> EndpointSlot {
        let state = self.state(slot).load(Ordering::Acquire);
        let entry = self.entry(slot);
        // SAFETY: as in `assign`; `state` was read atomically above.
        unsafe {
            EndpointSlot {
                state,
                key: (*entry).key,
                epoch: self.epoch(slot),
                flags: (*entry).flags,
            }
        }
    }

    fn state(&self, slot: u32) -> &AtomicU64 {
        // SAFETY: `state` is the first field of an 8-byte-aligned, 32-byte entry in a
        // page-aligned mapping that lives as long as `self`.
        unsafe { AtomicU64::from_ptr(&raw mut (*self.entry(slot)).state) }
    }

    fn entry(&self, slot: u32) -> *mut EndpointSlot {
        assert!(slot < MAX_SLOTS, "slot {slot} out of range");
        // SAFETY: inside the mapping (checked above).
        unsafe {
            self.entries
                .as_mut_ptr()
                .cast::<EndpointSlot>()
                .add(slot as usize)
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn endpoint(ifindex: u32) -> EndpointKey {
        EndpointKey {
            netns_cookie: 4097,
            ifindex,
            _pad: 0,
        }
    }

    /// Shared memory laid out as `ENDPOINTS`: each call maps it again, as each agent
    /// maps the kernel's array.
    pub(in crate::datapath) fn shared() -> impl Fn() -> Slots {
        let file = tempfile::tempfile().unwrap();
        file.set_len(LEN as u64).unwrap();
        move || Slots::over(MmapOptions::new().len(LEN).map_raw(&file).unwrap())
    }

    #[test]
    fn a_freed_slot_is_given_out_last_and_with_a_new_epoch() {
        let mut slots = shared()();
        let (first, epoch) = slots.reserve().unwrap();
        assert_eq!((first, epoch), (1, 1), "slot 0 is never given out");
        slots.assign(&endpoint(2), first, epoch);
        assert_eq!(slots.release(&endpoint(2)), Some(first));
        let (next, _) = slots.reserve().unwrap();
        assert_ne!(
            next, first,
            "a freed slot waits behind every other free one"
        );
        for _ in 3..MAX_SLOTS {
            slots.reserve().unwrap();
        }
        assert_eq!(
            slots.reserve().unwrap(),
            (first, 2),
            "reused with the next epoch"
        );
        assert!(matches!(slots.reserve(), Err(DatapathError::NoFreeSlot)));
    }

    #[test]
    fn the_state_word_is_the_configuration_and_zero_unprograms() {
        let mut slots = shared()();
        let (slot, epoch) = slots.reserve().unwrap();
        slots.assign(&endpoint(2), slot, epoch);
        assert_eq!(slots.config(slot), None, "assigned, not programmed");
        let config = EndpointConfig {
            id: slot,
            flags: 3,
            generation: 1,
            revision: 7,
        };
        slots.set_config(&config);
        assert_eq!(slots.config(slot), Some(config));
        slots.unprogram(slot);
        assert_eq!(slots.config(slot), None);
    }

    #[test]
    fn another_agent_finds_the_assigned_slots_and_their_epochs() {
        let map = shared();
        let mut slots = map();
        let (slot, epoch) = slots.reserve().unwrap();
        slots.assign(&endpoint(2), slot, epoch);
        let (promised, _) = slots.reserve().unwrap();
        let again = map();
        assert_eq!(again.slot_of(&endpoint(2)), Some(slot));
        assert_eq!(again.epoch(slot), epoch);
        assert_eq!(
            again.assigned().count(),
            1,
            "a slot only promised to the pool is free"
        );
        assert!(again.free.contains(&promised));
    }
}
