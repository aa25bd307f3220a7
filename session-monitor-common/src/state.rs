//! Values of the kernel maps that aggregate activity, so that nothing is lost when the
//! ring buffer is busy: the daemon reads the latest state from here whenever it decides.

/// Identifies a login (one person's connection: an sshd per connection, a mosh-server,
/// a console login, ...). Chosen by the daemon; the kernel only copies it from parent to
/// child at fork. [`NO_LOGIN`] means the process belongs to none.
pub type LoginId = u64;

/// A process that belongs to no login.
pub const NO_LOGIN: LoginId = 0;

/// Aggregated input of a terminal or a login, so that the ring buffer only carries
/// notices.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputActivity {
    /// Last input (CLOCK_BOOTTIME ns); 0 = none yet. Taken at the first input of each
    /// kernel tick, so it may be up to one tick (1-10 ms) earlier than the last input.
    pub last_input_ns: u64,
    pub input_bytes: u64,
    pub input_count: u64,
    /// When the last input notice (`TtyInput`, `LoginInput`) went out, for rate
    /// limiting.
    pub last_notice_ns: u64,
    /// The kernel tick (`jiffies`) of the input that set `last_input_ns`: later input
    /// in the same tick keeps that time, so that a burst (a paste, a program typing)
    /// reads the clock once per tick, not once per write.
    pub last_input_tick: u64,
}

/// Per-terminal activity (map `TTY_ACTIVITY`, keyed by [`crate::TtyKey`]): writes
/// into the master, resizes, console input. An entry made by program output alone
/// has no input yet: the terminal is only known.
pub type TtyActivity = InputActivity;

/// A slot of map `PTS_ACTIVITY`: the activity of pseudo-terminal number N (the
/// slot's index) of one devpts instance, its `owner`. The hot path's map: a keystroke
/// finds its terminal by an array lookup (a bounds check and a load), where the hash
/// map `TTY_ACTIVITY` costs a helper call, a hash and a bucket walk, a cache miss or
/// two each among a thousand terminals. Pts numbers are handed out lowest first, so
/// the slots in use stay dense. The first instance whose terminal N is seen owns
/// slot N until the terminal is forgotten; the same number of another instance (a
/// container's) goes to `TTY_ACTIVITY`, as consoles do.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtsSlot {
    /// `TtyKey::pts_dev` of the terminal in the slot; 0 = free. Claimed with a
    /// compare-and-exchange: two instances' terminals of one number never share it.
    pub owner: u64,
    pub activity: TtyActivity,
}

impl PtsSlot {
    /// The slot that terminal `key` may own: pseudo-terminals of numbers below `slots`.
    #[inline(always)]
    pub fn index(key: &crate::TtyKey, slots: u32) -> Option<u32> {
        use crate::dev;
        let number = dev::minor(key.rdev);
        (key.is_pty() && dev::major(key.rdev) == dev::PTY_SLAVE_MAJOR_FIRST && number < slots)
            .then_some(number)
    }

    /// The key of the terminal in slot `index` whose `owner` is `owner`, if taken.
    pub fn key(index: u32, owner: u64) -> Option<crate::TtyKey> {
        (owner != 0).then(|| crate::TtyKey {
            rdev: crate::dev::mkdev(crate::dev::PTY_SLAVE_MAJOR_FIRST, index),
            pts_dev: owner as u32,
        })
    }

    /// The `owner` of a slot that terminal `key` (of the slot's number) holds.
    #[inline(always)]
    pub fn owner_of(key: &crate::TtyKey) -> u64 {
        u64::from(key.pts_dev)
    }
}

/// Input of a login that arrived without a terminal (map `LOGIN_ACTIVITY`, keyed by
/// [`LoginId`]): what its transport wrote into pipes and AF_UNIX sockets, i.e. into
/// the shell, command or sftp server of an `ssh -T`, `ssh host cmd` or sftp login.
pub type LoginActivity = InputActivity;

/// Sets of pids, one bit per pid (an array map of `u64` words): gates in front of
/// `PROCS`, a hash map whose bucket for a new pid is a cache miss. An array lookup is
/// a bounds check and a load, and neighbouring pids share a word; the hash lookup
/// behind a gate is paid only by the pids whose bit is set. A bit left set for a pid
/// that exited costs its next owner that lookup and nothing else, because `PROCS`
/// decides; a bit must never be clear while `PROCS` holds an entry it gates.
///
/// - `TRANSPORT_PIDS`: transports, the gate on every pipe and socket write. The
///   daemon sets a bit before it makes a process a transport and clears it when it
///   stops being one.
/// - `ADOPTED_PIDS`: processes the daemon put into `PROCS`. Written by the daemon
///   only: set before its write, cleared after it removed the entry.
/// - `FORKED_PIDS`: processes the probes put into `PROCS` at fork. Written by the
///   probes only, with atomic operations (neighbouring pids share a word): set
///   before the insert, cleared after the process's exit removed the entry.
///
/// A process may be in `PROCS` only when its bit is set in `ADOPTED_PIDS` or
/// `FORKED_PIDS`: a fork, exit or UDP receive of any other process looks no further.
pub mod pid_bits {
    /// The kernel's pid limit (`PID_MAX_LIMIT` on 64-bit), which no pid reaches.
    pub const PIDS: u32 = 4 * 1024 * 1024;
    /// Words in the map: 512 KiB.
    pub const WORDS: u32 = PIDS / 64;

    /// The word that holds `tgid`'s bit.
    #[inline(always)]
    pub const fn word(tgid: u32) -> u32 {
        tgid / 64
    }

    /// `tgid`'s bit in its word.
    #[inline(always)]
    pub const fn bit(tgid: u32) -> u64 {
        1 << (tgid % 64)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_pid_has_its_own_bit_in_the_map() {
            assert_eq!((word(0), bit(0)), (0, 1));
            assert_eq!((word(63), bit(63)), (0, 1 << 63));
            assert_eq!((word(64), bit(64)), (1, 1));
            assert_eq!((word(PIDS - 1), bit(PIDS - 1)), (WORDS - 1, 1 << 63));
            // Neighbours share a word, never a bit.
            assert_ne!(bit(4242), bit(4243));
            assert_eq!(word(4242), word(4243));
        }
    }
}

/// Flags of [`ProcState::flags`]. None of them is inherited at fork: a child gets its
/// parent's login and no flags.
pub mod proc_flags {
    /// Send a `ProcessExit` event when the process exits.
    pub const WATCH_EXIT: u32 = 1;
    /// Record UDP receives (network liveness of a Mosh server).
    pub const WATCH_UDP: u32 = 2;
    /// The process carries its login's connection (a per-connection sshd): what it
    /// writes into pipes and AF_UNIX sockets is the login's input.
    pub const TRANSPORT: u32 = 4;
    /// The process accepts connections (the listening sshd): each process it forks is
    /// reported (`ListenerForked`), so that logins without a terminal are found.
    pub const LISTENER: u32 = 8;
}

/// A process the kernel knows (map `PROCS`, keyed by tgid): one the daemon tracks, or
/// one forked from a process of a login. The kernel removes the entry when the process
/// exits, so a reused pid never inherits it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcState {
    /// The login the process belongs to; [`NO_LOGIN`] if none.
    pub login: LoginId,
    /// Last UDP datagram received (CLOCK_BOOTTIME ns); 0 = none yet.
    pub last_udp_ns: u64,
    /// [`proc_flags`].
    pub flags: u32,
    pub _pad: u32,
}

#[cfg(test)]
mod pts_slot_tests {
    use super::*;
    use crate::{TtyKey, dev::mkdev};

    #[test]
    fn a_pseudo_terminal_below_the_slots_has_the_slot_of_its_number() {
        let pts = |n| TtyKey {
            rdev: mkdev(136, n),
            pts_dev: 0x1a,
        };
        assert_eq!(PtsSlot::index(&pts(0), 4096), Some(0));
        assert_eq!(PtsSlot::index(&pts(4095), 4096), Some(4095));
        assert_eq!(PtsSlot::index(&pts(4096), 4096), None);
        let console = TtyKey {
            rdev: mkdev(4, 1),
            pts_dev: 0,
        };
        assert_eq!(PtsSlot::index(&console, 4096), None);
    }

    #[test]
    fn a_taken_slot_gives_back_the_key_of_its_terminal() {
        let key = TtyKey {
            rdev: mkdev(136, 7),
            pts_dev: 0x1a,
        };
        assert_eq!(PtsSlot::key(7, 0x1a), Some(key));
        assert_eq!(PtsSlot::owner_of(&key), 0x1a);
        assert_ne!(
            PtsSlot::owner_of(&TtyKey {
                pts_dev: 0x2b,
                ..key
            }),
            0x1a
        );
        assert_eq!(PtsSlot::key(7, 0), None);
    }
}
