//! `PTS_ACTIVITY` (see [`PtsSlot`]), mapped into the daemon's memory: the map is
//! `BPF_F_MMAPABLE`, so the daemon claims a free slot with the same
//! compare-and-exchange as the probes (a system call could only overwrite the slot
//! and race them), and lists the terminals in the slots by reading memory, not with
//! one system call per slot.

use std::{
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Map, MapData};
use session_monitor_common::{PtsSlot, TtyActivity, TtyKey};

pub struct PtsSlots {
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
    slots: NonNull<PtsSlot>,
    len: u32,
    mapped_bytes: usize,
}

// SAFETY: the mapping is shared memory that the kernel writes concurrently anyway;
// every access goes through volatile reads and writes or atomics.
unsafe impl Send for PtsSlots {}
unsafe impl Sync for PtsSlots {}

impl PtsSlots {
    /// Maps `map`, which must be the array `PTS_ACTIVITY`.
    pub fn map(map: Map) -> Result<Self> {
        let Map::Array(data) = map else {
            bail!("PTS_ACTIVITY is not an array map");
        };
        let info = data.info().context("reading PTS_ACTIVITY's definition")?;
        if info.value_size() as usize != size_of::<PtsSlot>() {
            bail!(
                "PTS_ACTIVITY holds {}-byte values, not the {} of a slot",
                info.value_size(),
                size_of::<PtsSlot>()
            );
        }
        let len = info.max_entries();
        let page = rustix::param::page_size();
        let mapped_bytes = (len as usize * size_of::<PtsSlot>()).next_multiple_of(page);
        // SAFETY: a new shared mapping of the map's own memory (the values, in
        // order, from offset 0), unmapped only in `drop`.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                mapped_bytes,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                data.fd(),
                0,
            )
        }
        .context("mapping PTS_ACTIVITY into memory (BPF_F_MMAPABLE, Linux 5.5+)")?;
        Ok(Self {
            _map: data,
            slots: NonNull::new(base.cast()).context("mmap gave a null mapping")?,
            len,
            mapped_bytes,
        })
    }

    fn slot(&self, index: u32) -> Option<*mut PtsSlot> {
        // SAFETY: in bounds of the mapping.
        (index < self.len).then(|| unsafe { self.slots.as_ptr().add(index as usize) })
    }

    fn owner(&self, index: u32) -> Option<&AtomicU64> {
        // SAFETY: an aligned u64 of the mapping, which lives as long as `self`; the
        // probes change it only atomically.
        self.slot(index)
            .map(|slot| unsafe { AtomicU64::from_ptr(&raw mut (*slot).owner) })
    }

    /// Terminal `key`'s slot index and activity, if the terminal is in its slot.
    pub fn held(&self, key: &TtyKey) -> Option<(u32, TtyActivity)> {
        let index = PtsSlot::index(key, self.len)?;
        let slot = self.slot(index)?;
        if self.owner(index)?.load(Ordering::Acquire) != PtsSlot::owner_of(key) {
            return None;
        }
        // SAFETY: in bounds; the probes write it concurrently (a torn read gives
        // a mix of two recent values, never an invalid one: plain integers).
        Some((index, unsafe {
            std::ptr::read_volatile(&raw const (*slot).activity)
        }))
    }

    /// Claims terminal `key`'s slot if it is free: true when the slot is now the
    /// terminal's (claimed here, or by the probes for the same terminal).
    pub fn claim(&self, key: &TtyKey) -> bool {
        let Some(owner) = PtsSlot::index(key, self.len).and_then(|i| self.owner(i)) else {
            return false;
        };
        let this = PtsSlot::owner_of(key);
        match owner.compare_exchange(0, this, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(held) => held == this,
        }
    }

    /// Sets the last input time of the terminal in slot `index`.
    pub fn set_last_input(&self, index: u32, last_input_ns: u64) {
        if let Some(slot) = self.slot(index) {
            // SAFETY: in bounds; an aligned u64 of the mapping.
            unsafe {
                std::ptr::write_volatile(&raw mut (*slot).activity.last_input_ns, last_input_ns)
            };
        }
    }

    /// Empties the slot of terminal `key` if the terminal holds it: its activity
    /// first, then the owner, so that whoever claims it next starts from nothing.
    pub fn free(&self, key: &TtyKey) {
        let Some((index, _)) = self.held(key) else {
            return;
        };
        if let Some(slot) = self.slot(index) {
            // SAFETY: in bounds of the mapping.
            unsafe { std::ptr::write_volatile(&raw mut (*slot).activity, TtyActivity::default()) };
        }
        if let Some(owner) = self.owner(index) {
            let _ = owner.compare_exchange(
                PtsSlot::owner_of(key),
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// The terminals in the slots.
    pub fn keys(&self) -> impl Iterator<Item = TtyKey> + '_ {
        (0..self.len)
            .filter_map(|index| PtsSlot::key(index, self.owner(index)?.load(Ordering::Acquire)))
    }
}

impl Drop for PtsSlots {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        let _ = unsafe { rustix::mm::munmap(self.slots.as_ptr().cast(), self.mapped_bytes) };
    }
}
