//! Maps shared by all programs. Sizes are defaults; the loader may resize them.

use core::arch::asm;

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use session_monitor_common::{
    LoginActivity, LoginId, Probe, ProcState, PtsSlot, Stat, TtyActivity, TtyKey,
    counters::{COUNTER_SLOTS, slot},
    state::pid_bits,
};

/// Activity per terminal. Written by the probes, read and pruned by the daemon.
#[map]
pub static TTY_ACTIVITY: HashMap<TtyKey, TtyActivity> = HashMap::with_max_entries(16384, 0);

/// Activity per pseudo-terminal number, the hot path's map (see
/// `session_monitor_common::PtsSlot`): a keystroke's lookup is a bounds check and a
/// load. Terminals without a slot (consoles, numbers past the end, the same number of
/// a second devpts instance) are in [`TTY_ACTIVITY`]. The loader sizes it like
/// [`TTY_ACTIVITY`]. Mappable: the daemon claims a slot with the same atomic
/// compare-and-exchange as [`pts_entry`].
#[map]
pub static PTS_ACTIVITY: Array<PtsSlot> = Array::with_max_entries(16384, BPF_F_MMAPABLE);

/// Where terminal `key`'s activity is kept, as [`pts_entry`] finds it.
pub enum PtsEntry {
    /// In its slot of [`PTS_ACTIVITY`].
    Held(&'static mut PtsSlot),
    /// Its slot was free and is now the terminal's; the caller fills it.
    Claimed(&'static mut PtsSlot),
    /// In [`TTY_ACTIVITY`] (or not known yet and going there).
    Elsewhere,
}

/// Finds terminal `key`'s slot in [`PTS_ACTIVITY`] and claims it when it is free and
/// the terminal is not already in [`TTY_ACTIVITY`] (where a terminal stays once
/// there, also after its number's slot was freed: one terminal, one entry).
#[inline(always)]
pub fn pts_entry(key: &TtyKey) -> PtsEntry {
    // The array's own bounds check decides which numbers have a slot.
    let Some(slot) = PtsSlot::index(key, u32::MAX).and_then(|i| PTS_ACTIVITY.get_ptr_mut(i)) else {
        return PtsEntry::Elsewhere;
    };
    // SAFETY: map value pointer from the kernel, valid for this program run; other
    // CPUs change `owner` only atomically (a volatile read: no atomic loads here).
    let slot = unsafe { &mut *slot };
    let owner = unsafe { core::ptr::read_volatile(&slot.owner) };
    let this = PtsSlot::owner_of(key);
    if owner == this {
        return PtsEntry::Held(slot);
    }
    if owner != 0 || TTY_ACTIVITY.get_ptr(key).is_some() {
        return PtsEntry::Elsewhere;
    }
    match claim(&mut slot.owner, this) {
        0 => PtsEntry::Claimed(slot),
        // Another CPU claimed it for this terminal first.
        won if won == this => PtsEntry::Held(slot),
        _ => PtsEntry::Elsewhere,
    }
}

/// Sets `*owner` to `this` if it is 0, atomically (BPF_ATOMIC BPF_CMPXCHG, Linux
/// 5.12+, in assembly: Rust has no atomics on this target); returns what it held.
#[inline(always)]
fn claim(owner: &mut u64, this: u64) -> u64 {
    let mut seen: u64 = 0;
    // SAFETY: an aligned word of a map value, valid for this program run.
    unsafe {
        asm!(
            "r0 = cmpxchg_64({owner} + 0, r0, {this})",
            owner = in(reg) owner as *mut u64,
            this = in(reg) this,
            inout("r0") seen,
            options(nostack),
        );
    }
    seen
}

/// Processes the kernel knows, by tgid: those the daemon tracks (session leaders,
/// transports, Mosh servers, listeners) and every process forked from a process of a
/// login. Not preallocated: the loader sizes it for every process the host can have
/// (so that a user cannot fill it to escape), and only live entries take memory.
#[map]
pub static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(32768, BPF_F_NO_PREALLOC);

/// Input without a terminal, per login: what its transport wrote into pipes and
/// AF_UNIX sockets. Written by the probes, read and pruned by the daemon.
#[map]
pub static LOGIN_ACTIVITY: HashMap<LoginId, LoginActivity> = HashMap::with_max_entries(16384, 0);

/// Revoked users, by uid. Input written by a transport running as one of them is
/// stopped in the kernel.
#[map]
pub static REVOKED_UIDS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Nonzero while [`REVOKED_UIDS`] may have entries: the daemon sets it before it
/// revokes a uid and clears it only once that map is empty. Every keystroke checks
/// it first: an array lookup the verifier inlines into a load, where the hash lookup
/// is a helper call and a hash, paid for nothing while nobody is revoked.
#[map]
pub static REVOKED_ANY: Array<u32> = Array::with_max_entries(1, 0);

/// Transports, one bit per pid: the gate in front of [`PROCS`] on every pipe and
/// socket write (see `session_monitor_common::state::pid_bits`). Written by the
/// daemon only.
#[map]
pub static TRANSPORT_PIDS: Array<u64> = Array::with_max_entries(pid_bits::WORDS, 0);

/// Processes the daemon put into [`PROCS`], one bit per pid: with [`FORKED_PIDS`],
/// the gate in front of it on every fork, exit and UDP receive. Written by the
/// daemon only.
#[map]
pub static ADOPTED_PIDS: Array<u64> = Array::with_max_entries(pid_bits::WORDS, 0);

/// Processes the probes put into [`PROCS`] at fork, one bit per pid. Written by the
/// probes only, atomically: see [`mark_forked`].
#[map]
pub static FORKED_PIDS: Array<u64> = Array::with_max_entries(pid_bits::WORDS, 0);

/// Whether [`PROCS`] may hold an entry for process `tgid`; when false it holds none
/// (see `session_monitor_common::state::pid_bits`). Two loads from words that
/// neighbouring pids share, where a lookup of the hash map is a helper call and a
/// bucket of its own for each pid.
#[inline(always)]
pub fn maybe_in_procs(tgid: u32) -> bool {
    let word = pid_bits::word(tgid);
    let (Some(adopted), Some(forked)) = (ADOPTED_PIDS.get(word), FORKED_PIDS.get_ptr(word)) else {
        // No pid is beyond the bitmaps; were one, the map decides.
        return true;
    };
    // SAFETY: an aligned word of a map value, valid for this program run. Other CPUs
    // change it only atomically, and an aligned load of a word is never torn (a
    // volatile read: this target has no atomic loads).
    let forked = unsafe { core::ptr::read_volatile(forked) };
    (*adopted | forked) & pid_bits::bit(tgid) != 0
}

/// Sets (before [`PROCS`] gets an entry made at fork) or clears (after the exit
/// removed it) process `tgid`'s bit in [`FORKED_PIDS`]. Atomic: the other bits of
/// the word are other processes', which other CPUs may be changing. In assembly
/// (BPF_ATOMIC with BPF_OR or BPF_AND, Linux 5.12+): Rust has no read-modify-write
/// atomics on this target.
#[inline(always)]
pub fn mark_forked(tgid: u32, forked: bool) {
    let Some(word) = FORKED_PIDS.get_ptr_mut(pid_bits::word(tgid)) else {
        return;
    };
    let bit = pid_bits::bit(tgid);
    // SAFETY: an aligned word of a map value, valid for this program run.
    unsafe {
        if forked {
            asm!(
                "lock *(u64 *)({word} + 0) |= {bits}",
                word = in(reg) word,
                bits = in(reg) bit,
                options(nostack),
            );
        } else {
            asm!(
                "lock *(u64 *)({word} + 0) &= {bits}",
                word = in(reg) word,
                bits = in(reg) !bit,
                options(nostack),
            );
        }
    }
}

/// What the tracepoint backend remembers of each console's input. LRU: consoles come
/// and go, and only a few are ever typed into.
#[map]
pub static CONSOLES: LruHashMap<TtyKey, ConsoleState> = LruHashMap::with_max_entries(256, 0);

/// A console's entry in [`CONSOLES`].
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ConsoleState {
    /// Where the console's input had been read up to (n_tty's `read_tail`) at the
    /// last read counted. A read counts only if it moved since (see
    /// `tracepoints::tp_read_exit`).
    pub taken: u64,
    /// Bytes the console's own session put into its input (TIOCSTI) that no read
    /// has taken yet. The reads that take them are not input.
    pub injected: u64,
}

/// Console `key`'s entry in [`CONSOLES`], made if it has none; None if the map
/// cannot take it.
#[inline(always)]
pub fn console_state(key: TtyKey) -> Option<&'static mut ConsoleState> {
    if CONSOLES.get_ptr_mut(key).is_none() {
        let _ = CONSOLES.insert(key, ConsoleState::default(), BPF_ANY as u64);
    }
    // SAFETY: map value pointer from the kernel, valid for this program run; the
    // program holds no other reference to it.
    CONSOLES
        .get_ptr_mut(key)
        .map(|state| unsafe { &mut *state })
}

/// State changes for the daemon.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[inline(always)]
pub fn bump_slot(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn bump(probe: Probe, stat: Stat) {
    bump_slot(slot(probe, stat));
}
