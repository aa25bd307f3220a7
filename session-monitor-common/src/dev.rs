//! Device numbers and terminal classification.
//!
//! A session is keyed by its terminal: the device number of the tty (kernel encoding,
//! `major << 20 | minor`) plus, for pseudo-terminals, the device number of the devpts
//! instance it lives in. Containers mount their own devpts, so `pts/0` exists once per
//! instance; the pair is unique on the host. Both backends and the daemon classify a
//! terminal with the functions below, so they cannot disagree.

/// `MINORBITS` in the kernel's internal `dev_t`.
pub const MINOR_BITS: u32 = 20;
pub const MINOR_MASK: u32 = (1 << MINOR_BITS) - 1;

/// `/dev/tty` (5:0), `/dev/console` (5:1) and `/dev/ptmx` (5:2) share major 5.
pub const TTYAUX_MAJOR: u32 = 5;
pub const CONSOLE_MINOR: u32 = 1;
pub const PTMX_MINOR: u32 = 2;
/// Unix98 pty slaves (`/dev/pts/N`) use majors 136..=143.
pub const PTY_SLAVE_MAJOR_FIRST: u32 = 136;
pub const PTY_SLAVE_MAJOR_LAST: u32 = 143;
/// Virtual consoles (`tty0..tty63`) and 8250 serial ports (`ttyS*`).
pub const TTY_MAJOR: u32 = 4;
/// Other serial and hypervisor consoles people log in on.
pub const CONSOLE_LIKE_MAJORS: [u32; 5] = [
    204, // low-density serial: ttyAMA (Arm PL011), ttySAC, ...
    229, // hvc: Xen, virtio-console, POWER
    188, // ttyUSB
    166, // ttyACM
    207, // ttymxc and friends (i.MX serial)
];

/// Kernel `S_IFMT` and `S_IFCHR`: a character device.
pub const S_IFMT: u16 = 0o170000;
pub const S_IFCHR: u16 = 0o020000;
/// Kernel `S_IFIFO` (pipes and FIFOs) and `S_IFSOCK`.
pub const S_IFIFO: u16 = 0o010000;
pub const S_IFSOCK: u16 = 0o140000;

/// `TIOCSWINSZ`: a terminal resize, which the transport issues on the master when the
/// user's window changes size.
pub const TIOCSWINSZ: u32 = 0x5414;

/// `TIOCSTI`: puts one byte into a terminal's input as if typed. Allowed on the
/// caller's own controlling terminal (where `dev.tty.legacy_tiocsti` is on, and on
/// every kernel before 6.2) and to CAP_SYS_ADMIN: a way for a session to type into
/// itself.
pub const TIOCSTI: u32 = 0x5412;

#[inline(always)]
pub const fn mkdev(major: u32, minor: u32) -> u32 {
    (major << MINOR_BITS) | (minor & MINOR_MASK)
}

#[inline(always)]
pub const fn major(dev: u32) -> u32 {
    dev >> MINOR_BITS
}

#[inline(always)]
pub const fn minor(dev: u32) -> u32 {
    dev & MINOR_MASK
}

/// What a character device is, as far as sessions are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtyClass {
    /// `/dev/ptmx`: the transport's end of a pseudo-terminal. A write into it is what
    /// the user typed; it arrives on the slave as input.
    PtyMaster,
    /// `/dev/pts/N`: the session's end. A write into it is program output.
    PtySlave,
    /// A virtual console, serial line or hypervisor console a person logs in on.
    Console,
}

/// Classifies a character device by its kernel device number.
#[inline(always)]
pub const fn classify_rdev(rdev: u32) -> Option<TtyClass> {
    let maj = major(rdev);
    let min = minor(rdev);
    if maj == TTYAUX_MAJOR {
        return match min {
            PTMX_MINOR => Some(TtyClass::PtyMaster),
            CONSOLE_MINOR => Some(TtyClass::Console),
            _ => None,
        };
    }
    if maj >= PTY_SLAVE_MAJOR_FIRST && maj <= PTY_SLAVE_MAJOR_LAST {
        return Some(TtyClass::PtySlave);
    }
    if is_console_major(maj) {
        return Some(TtyClass::Console);
    }
    None
}

/// True for the majors of terminals that are consoles (not pseudo-terminals).
#[inline(always)]
pub const fn is_console_major(maj: u32) -> bool {
    if maj == TTY_MAJOR {
        return true;
    }
    let mut i = 0;
    while i < CONSOLE_LIKE_MAJORS.len() {
        if CONSOLE_LIKE_MAJORS[i] == maj {
            return true;
        }
        i += 1;
    }
    false
}

/// Identifies one terminal on the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TtyKey {
    /// Kernel `dev_t` of the terminal (`136:N` for `pts/N`, `4:1` for `tty1`).
    pub rdev: u32,
    /// Kernel `dev_t` of the devpts superblock for pseudo-terminals, 0 otherwise.
    pub pts_dev: u32,
}

impl TtyKey {
    pub const fn is_pty(&self) -> bool {
        self.pts_dev != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_device_number() {
        assert_eq!(classify_rdev(mkdev(5, 2)), Some(TtyClass::PtyMaster));
        assert_eq!(classify_rdev(mkdev(136, 0)), Some(TtyClass::PtySlave));
        assert_eq!(classify_rdev(mkdev(143, 7)), Some(TtyClass::PtySlave));
        assert_eq!(classify_rdev(mkdev(4, 1)), Some(TtyClass::Console));
        assert_eq!(classify_rdev(mkdev(4, 64)), Some(TtyClass::Console));
        assert_eq!(classify_rdev(mkdev(229, 0)), Some(TtyClass::Console));
        assert_eq!(classify_rdev(mkdev(5, 1)), Some(TtyClass::Console));
        // /dev/tty, /dev/null, /dev/zero, a pipe or a regular file (rdev 0).
        assert_eq!(classify_rdev(mkdev(5, 0)), None);
        assert_eq!(classify_rdev(mkdev(1, 3)), None);
        assert_eq!(classify_rdev(mkdev(1, 5)), None);
        assert_eq!(classify_rdev(0), None);
        assert_eq!(classify_rdev(mkdev(144, 0)), None);
    }

    #[test]
    fn dev_encoding_round_trips() {
        let d = mkdev(136, 300);
        assert_eq!(major(d), 136);
        assert_eq!(minor(d), 300);
    }
}
