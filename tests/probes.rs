//! The kernel side on its own: each test loads the probes through the daemon's own
//! loader (the same BTF offsets, tracepoint layouts and configuration), triggers one
//! path in-process — a keystroke into a pty master, output on its slave, writes into
//! /dev/null and a pipe, a fork, an exit, a UDP datagram — and reads what the programs
//! recorded straight from their maps and ring buffer. No daemon, sshd or terminal in
//! between, so a kernel-side bug shows here in seconds and names the path it is on.
//!
//! The tracepoint backend is used (fentry does not load on our CI machines);
//! `SESSION_MONITOR_BACKEND` chooses another (`cargo xtask vm-test` sets it). The
//! probes are loaded once for all tests (a load takes seconds, a test milliseconds),
//! which then run one at a time; nothing is pinned, so the maps die with the test
//! process. The probes see the whole host, so every assertion is about the test's own
//! terminals, processes and logins.
//!
//! The loader ignores terminal and pipe input written by its own process (the daemon's
//! notices are not input), so input is written by forked children ([`Child`]).

use std::{
    net::UdpSocket,
    os::fd::{AsFd, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{Mutex, MutexGuard, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use harness::{TestGuard, forced_backend, test_guard, wait_until};
use nix::{
    sys::{
        signal::{Signal, kill},
        stat::fstat,
        wait::{WaitStatus, waitpid},
    },
    unistd::{ForkResult, Pid, fork, pipe},
};
use session_monitor::{
    clock::boot_ns,
    probes::{self, BackendChoice, KernelMaps, LoadOptions, Probes, raw_event},
    sessions::key_from_stat,
};
use session_monitor_common::{
    Event, EventKind, LoginId, Probe, ProcState, TtyActivity, TtyKey,
    dev::{minor, mkdev},
    state::proc_flags::{LISTENER, TRANSPORT, WATCH_EXIT, WATCH_UDP},
};

/// The longest kernel tick (HZ 100): how early the recorded time of input may be.
const TICK_NS: u64 = 10_000_000;

/// How long a recorded effect may take to show (they are synchronous with the
/// syscall that caused them; the margin is for a loaded machine).
const SHOWS: Duration = Duration::from_secs(5);

/// The loaded probes, their maps and ring buffer, and the test lock (held until the
/// test process exits).
struct Kernel {
    maps: KernelMaps,
    ring: RingBuf<MapData>,
    probes: Probes,
    /// Events read so far that no assertion took yet.
    seen: Vec<Event>,
    _guard: TestGuard,
}

/// The probes, loaded by the first test that asks; each test holds them alone.
fn kernel() -> MutexGuard<'static, Kernel> {
    static KERNEL: OnceLock<Mutex<Kernel>> = OnceLock::new();
    let mut kernel = KERNEL
        .get_or_init(|| Mutex::new(Kernel::load()))
        .lock()
        // A test that failed holding them left nothing the next one relies on.
        .unwrap_or_else(PoisonError::into_inner);
    kernel.seen.clear();
    kernel
}

impl Kernel {
    fn load() -> Kernel {
        let guard = test_guard!();
        let backend = match forced_backend().as_deref() {
            None | Some("tracepoint") => BackendChoice::Tracepoint,
            Some("fentry") => BackendChoice::Fentry,
            Some("auto") => BackendChoice::Auto,
            Some(other) => panic!("SESSION_MONITOR_BACKEND={other}: not a backend"),
        };
        let opts = LoadOptions {
            backend,
            // Not the machine's pin directory: these maps are the test's alone.
            pin_dir: None,
            // One notice per terminal and login: later input is only counted.
            notice_interval: Duration::from_secs(3600),
            ..LoadOptions::default()
        };
        let started = Instant::now();
        let (probes, maps, ring) =
            probes::load(&opts).unwrap_or_else(|e| panic!("loading the probes: {e:#}"));
        eprintln!(
            "{} backend loaded in {:.1?}",
            probes.backend,
            started.elapsed()
        );
        Kernel {
            maps,
            ring,
            probes,
            seen: Vec::new(),
            _guard: guard,
        }
    }

    /// Reads what the ring buffer holds into `seen`.
    fn drain(&mut self) {
        while let Some(item) = self.ring.next() {
            if let Some(event) = raw_event(&item) {
                self.seen.push(event);
            }
        }
    }

    /// The first event (read so far or within [`SHOWS`]) that `matches`; taken out.
    fn event(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        wait_until(what, SHOWS, || {
            self.drain();
            let at = self.seen.iter().position(&matches)?;
            Some(self.seen.remove(at))
        })
    }

    /// The events read so far that `matches`, after reading the ring buffer again.
    fn events(&mut self, matches: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.drain();
        self.seen.iter().filter(|e| matches(e)).copied().collect()
    }

    fn tty_activity(&self, key: &TtyKey, what: &str) -> TtyActivity {
        wait_until(what, SHOWS, || self.maps.activity(key))
    }

    /// Asserts that terminal `key`'s only input is `what`, one byte written between
    /// `before` (CLOCK_BOOTTIME ns) and now, and returns its entry.
    fn assert_one_key(&self, key: &TtyKey, what: &str, before: u64) -> TtyActivity {
        let activity = self.tty_activity(key, &format!("{what} in TTY_ACTIVITY"));
        assert_input(
            what,
            (activity.input_count, activity.input_bytes),
            activity.last_input_ns,
            (1, 1),
            (before, boot_ns()),
        );
        activity
    }
}

/// A forked process that waits until [`Child::release`] before it runs its action and
/// exits (with status 0 when the action succeeded). Killed and reaped when dropped
/// unreleased, also when a test fails.
struct Child {
    pid: Pid,
    go: Option<OwnedFd>,
    reaped: bool,
}

impl Child {
    /// `action` runs in the forked child of a multithreaded process: it may only make
    /// async-signal-safe calls (raw `write`, `ioctl`, `fork`) and must not allocate or
    /// panic. It returns whether it succeeded.
    fn fork(action: impl FnOnce() -> bool) -> Child {
        let (wait_end, go) = pipe().expect("pipe");
        // SAFETY: the child only reads a byte, runs `action` (see above) and _exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => child_main(wait_end, go, action),
            ForkResult::Parent { child } => Child::waiting(child, go),
        }
    }

    /// As [`Child::fork`], with process id `pid` (`clone3` with `set_tid`); None when
    /// `pid` is taken.
    fn fork_as(pid: u32, action: impl FnOnce() -> bool) -> Option<Child> {
        /// `struct clone_args` up to `set_tid_size` (`CLONE_ARGS_SIZE_VER1`).
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
        }
        let (wait_end, go) = pipe().expect("pipe");
        let tid = [pid as libc::pid_t];
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            set_tid: tid.as_ptr() as u64,
            set_tid_size: 1,
            ..CloneArgs::default()
        };
        // SAFETY: a fork with a chosen pid (no shared memory, the parent's stack
        // copied); the child runs `child_main` as after `fork`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                size_of::<CloneArgs>(),
            )
        };
        match ret {
            0 => child_main(wait_end, go, action),
            child if child > 0 => Some(Child::waiting(Pid::from_raw(child as i32), go)),
            _ => None,
        }
    }

    fn waiting(pid: Pid, go: OwnedFd) -> Child {
        Child {
            pid,
            go: Some(go),
            reaped: false,
        }
    }

    fn tgid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Lets the child act and waits for it to exit; fails unless its action succeeded.
    fn release(self) {
        let pid = self.pid;
        let status = self.release_until_exit();
        assert_eq!(
            status,
            WaitStatus::Exited(pid, 0),
            "the child's action failed"
        );
    }

    /// Lets the child act and returns how it ended.
    fn release_until_exit(mut self) -> WaitStatus {
        let go = self.go.take().expect("released once");
        nix::unistd::write(&go, b"x").expect("releasing the child");
        drop(go);
        let status = waitpid(self.pid, None).expect("waitpid");
        self.reaped = true;
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// The child side of [`Child`]: waits for the byte that releases it, runs `action`
/// and exits with its result.
fn child_main(wait_end: OwnedFd, go: OwnedFd, action: impl FnOnce() -> bool) -> ! {
    drop(go);
    let mut byte = [0u8; 1];
    let _ = nix::unistd::read(&wait_end, &mut byte);
    let ok = action();
    // SAFETY: ends the child at once, without running the parent's atexit handlers
    // or destructors.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

/// Writes all of `bytes` (at most 64) into `fd` with one raw `write`
/// (async-signal-safe). The bytes are written from the stack: the probes read what a
/// pty master is given without faulting pages in, and a forked child's constant data
/// is not mapped until it is touched, so a write from there would read as unreadable
/// (which the probes take as input, never as a terminal answer).
fn raw_write(fd: RawFd, bytes: &[u8]) -> bool {
    let mut buf = [0u8; 64];
    let Some(copy) = buf.get_mut(..bytes.len()) else {
        return false;
    };
    copy.copy_from_slice(bytes);
    // SAFETY: a valid buffer of that length; `fd` is checked by the kernel.
    unsafe { libc::write(fd, copy.as_ptr().cast(), copy.len()) == copy.len() as isize }
}

/// A pseudo-terminal and the key the kernel side files it under.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    key: TtyKey,
}

impl Pty {
    fn open(kernel: &mut Kernel) -> Pty {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let st = fstat(pty.slave.as_fd()).expect("fstat of the pty slave");
        let key = key_from_stat(st.st_rdev, st.st_dev);
        // A pts number is reused: forget what an earlier terminal of this number left.
        kernel.maps.forget_tty(&key);
        Pty {
            master: pty.master,
            slave: pty.slave,
            key,
        }
    }

    /// A child that writes `bytes` into the master, as a transport does with keys.
    fn keystroke(&self, bytes: &'static [u8]) -> Child {
        let master = self.master.as_raw_fd();
        Child::fork(move || raw_write(master, bytes))
    }
}

/// Asserts that input was counted `(count, bytes)` times and bytes, the last of it
/// at `last_ns`, within `(from, to)` (CLOCK_BOOTTIME ns).
fn assert_input(
    what: &str,
    counted: (u64, u64),
    last_ns: u64,
    expected: (u64, u64),
    window: (u64, u64),
) {
    assert_eq!(counted, expected, "{what}: (count, bytes)");
    let (from, to) = window;
    assert!(
        (from..=to).contains(&last_ns),
        "{what}: last input at {last_ns} ns, not between {from} and {to}"
    );
}

#[test]
fn a_keystroke_into_a_pty_master_is_input_and_output_on_its_slave_is_not() {
    let mut kernel = kernel();
    let pty = Pty::open(&mut kernel);

    let before = boot_ns();
    let typist = pty.keystroke(b"a");
    let typist_tgid = typist.tgid();
    typist.release();
    let activity = kernel.assert_one_key(&pty.key, "the keystroke", before);
    let first = kernel.event("TtyFirstInput of the terminal", |e| {
        e.kind() == Some(EventKind::TtyFirstInput) && e.key == pty.key
    });
    assert_eq!(first.tgid, typist_tgid, "the writer is the transport");

    // Program output on the slave (written by anyone) is not input.
    assert!(raw_write(pty.slave.as_raw_fd(), b"output\r\n"));
    let child_output = Child::fork({
        let slave = pty.slave.as_raw_fd();
        move || raw_write(slave, b"more output\r\n")
    });
    child_output.release();
    let after_output = kernel.maps.activity(&pty.key).expect("still known");
    assert_eq!(
        (after_output.input_count, after_output.last_input_ns),
        (1, activity.last_input_ns),
        "output on the slave counted as input: {after_output:?}"
    );

    // More keys are counted; their notice waits for the notice interval. The time of
    // input is read once per kernel tick: it may be a tick early (10 ms at most).
    let before_more = boot_ns();
    pty.keystroke(b"bc").release();
    let more = kernel.maps.activity(&pty.key).expect("still known");
    assert_eq!((more.input_count, more.input_bytes), (2, 3), "{more:?}");
    assert!(
        more.last_input_ns + TICK_NS >= before_more && more.last_input_ns <= boot_ns(),
        "the time of the later keys, {} ns, is more than a tick before {before_more} ns",
        more.last_input_ns
    );
    let notices = kernel.events(|e| e.key == pty.key);
    assert!(
        notices.is_empty(),
        "events within the notice interval: {notices:?}"
    );

    // The loader's own process (the daemon, writing its notices) is never input.
    assert!(raw_write(pty.master.as_raw_fd(), b"notice"));
    let own = kernel.maps.activity(&pty.key).expect("still known");
    assert_eq!(
        own.input_count, 2,
        "the daemon's own write counted: {own:?}"
    );
}

/// A writer with more descriptors than `files_struct` embeds (64), as a tmux server
/// with many panes has: the kernel moved its table to one it allocated, whose slots
/// the programs read another way (a load through an untyped cast from 6.17, a helper
/// call before).
#[test]
fn a_keystroke_through_a_descriptor_past_the_embedded_table_is_input() {
    let mut kernel = kernel();
    let pty = Pty::open(&mut kernel);
    let master = pty.master.as_raw_fd();

    let before = boot_ns();
    Child::fork(move || {
        // SAFETY: fcntl is async-signal-safe; the kernel checks the descriptor.
        let high = unsafe { libc::fcntl(master, libc::F_DUPFD, 200) };
        high >= 200 && raw_write(high, b"q")
    })
    .release();
    kernel.assert_one_key(
        &pty.key,
        "the keystroke through descriptor 200 or above",
        before,
    );
}

#[test]
fn output_alone_makes_a_terminal_known_and_a_resize_is_input() {
    let mut kernel = kernel();
    let pty = Pty::open(&mut kernel);

    assert!(raw_write(pty.slave.as_raw_fd(), b"$ "));
    let seen = kernel.tty_activity(&pty.key, "the terminal in TTY_ACTIVITY");
    assert_eq!(
        (seen.input_count, seen.input_bytes, seen.last_input_ns),
        (0, 0, 0),
        "output counted as input: {seen:?}"
    );
    kernel.event("TtyFirstOutput of the terminal", |e| {
        e.kind() == Some(EventKind::TtyFirstOutput) && e.key == pty.key
    });

    // The user's window changes size: the transport resizes the master.
    let master = pty.master.as_raw_fd();
    let resizer = Child::fork(move || {
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
        unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) == 0 }
    });
    let resizer_tgid = resizer.tgid();
    resizer.release();
    let resized = kernel.maps.activity(&pty.key).expect("still known");
    assert_eq!(
        (resized.input_count, resized.input_bytes),
        (1, 0),
        "{resized:?}"
    );
    // Input on a terminal known from its output: a TtyInput notice (not a first one).
    let notice = kernel.event("TtyInput after the resize", |e| {
        e.kind() == Some(EventKind::TtyInput) && e.key == pty.key
    });
    assert_eq!(notice.tgid, resizer_tgid);
}

/// A terminal the daemon found at start-up (seeded with its access time) takes its
/// pts slot like one the probes saw first, so its keystrokes take the fast path.
#[test]
fn a_terminal_seeded_at_start_up_takes_its_slot() {
    let mut kernel = kernel();
    let pty = Pty::open(&mut kernel);
    let seeded_ns = boot_ns() - 1_000_000_000;
    kernel
        .maps
        .seed_activity(pty.key, seeded_ns)
        .expect("seeding the terminal");
    assert!(
        kernel.maps.in_pts_slot(&pty.key),
        "{:?} not in its slot",
        pty.key
    );
    let seeded = kernel.maps.activity(&pty.key).expect("the seeded terminal");
    assert_eq!(
        (seeded.last_input_ns, seeded.input_count),
        (seeded_ns, 0),
        "{seeded:?}"
    );

    let before = boot_ns();
    pty.keystroke(b"k").release();
    let typed = kernel.maps.activity(&pty.key).expect("still known");
    assert_input(
        "the keystroke after seeding",
        (typed.input_count, typed.input_bytes),
        typed.last_input_ns,
        (1, 1),
        (before, boot_ns()),
    );
    assert!(kernel.maps.in_pts_slot(&pty.key));
    kernel.maps.forget_tty(&pty.key);
    assert_eq!(kernel.maps.activity(&pty.key), None);
}

/// The host's devpts and a container's hand out the same numbers: terminals of one
/// number in two instances are two terminals, each counted on its own. The first one
/// typed into takes the number's slot (`PtsSlot`), the other goes to the hash map,
/// and stays there when the slot is freed: one terminal, one entry, one first input.
#[test]
fn terminals_of_one_number_in_two_devpts_instances_are_kept_apart() {
    let mut kernel = kernel();
    let host = Pty::open(&mut kernel);
    let mut instance = Devpts::mount();
    let container = instance.pty_numbered(minor(host.key.rdev), &mut kernel);
    assert_ne!(
        container.key.pts_dev, host.key.pts_dev,
        "{:?}",
        container.key
    );

    let typed = |pty: &Pty, bytes: &'static [u8]| {
        let typist = pty.keystroke(bytes);
        let tgid = typist.tgid();
        typist.release();
        tgid
    };
    let before = boot_ns();
    let container_typist = typed(&container, b"c");
    kernel.assert_one_key(&container.key, "the container terminal's keystroke", before);
    let before = boot_ns();
    let host_typist = typed(&host, b"h");
    kernel.assert_one_key(&host.key, "the host terminal's keystroke", before);
    assert!(
        kernel.maps.in_pts_slot(&container.key) && !kernel.maps.in_pts_slot(&host.key),
        "the first terminal typed into does not hold the number's slot"
    );
    let container_again = kernel.maps.activity(&container.key).expect("still known");
    assert_eq!(
        container_again.input_count, 1,
        "the host's keystroke counted on the container's terminal: {container_again:?}"
    );
    for (key, typist) in [(host.key, host_typist), (container.key, container_typist)] {
        kernel.event("TtyFirstInput of each terminal", |e| {
            e.kind() == Some(EventKind::TtyFirstInput) && e.key == key && e.tgid == typist
        });
        assert!(kernel.maps.tty_keys().contains(&key), "{key:?} not listed");
    }

    // The container's terminal ends; the host's goes on where it was counted.
    kernel.maps.forget_tty(&container.key);
    assert_eq!(kernel.maps.activity(&container.key), None);
    let later_typist = typed(&host, b"i");
    let host_again = kernel.maps.activity(&host.key).expect("still known");
    assert_eq!(host_again.input_count, 2, "{host_again:?}");
    let again_first =
        kernel.events(|e| e.kind() == Some(EventKind::TtyFirstInput) && e.tgid == later_typist);
    assert!(
        again_first.is_empty(),
        "the host terminal was new again: {again_first:?}"
    );
    let listed = kernel.maps.tty_keys();
    assert_eq!(
        listed.iter().filter(|k| **k == host.key).count(),
        1,
        "the host terminal listed more than once: {listed:?}"
    );
}

/// A devpts instance of its own (`newinstance`, as a container mounts), unmounted
/// when dropped, also when a test fails.
struct Devpts {
    dir: std::path::PathBuf,
    /// Masters opened to reach a number, kept open so that it stays taken.
    held: Vec<OwnedFd>,
}

impl Devpts {
    fn mount() -> Devpts {
        let dir = std::env::temp_dir().join(format!("sm-probes-devpts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the devpts mount point");
        nix::mount::mount(
            Some("devpts"),
            &dir,
            Some("devpts"),
            nix::mount::MsFlags::empty(),
            Some("newinstance,ptmxmode=0666"),
        )
        .unwrap_or_else(|e| panic!("mounting a devpts instance on {}: {e}", dir.display()));
        Devpts {
            dir,
            held: Vec::new(),
        }
    }

    /// A pty of this instance numbered `number` (numbers are handed out lowest
    /// first: the ones below it are opened and held).
    fn pty_numbered(&mut self, number: u32, kernel: &mut Kernel) -> Pty {
        loop {
            let master: OwnedFd = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.dir.join("ptmx"))
                .expect("opening the instance's ptmx")
                .into();
            let mut got: libc::c_uint = 0;
            // SAFETY: TIOCGPTN writes an unsigned int; unlockpt takes a master.
            let ok = unsafe {
                libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut got) == 0
                    && libc::unlockpt(master.as_raw_fd()) == 0
            };
            assert!(ok, "TIOCGPTN/unlockpt: {}", std::io::Error::last_os_error());
            assert!(
                got <= number,
                "the instance skipped number {number} (gave {got})"
            );
            if got < number {
                self.held.push(master);
                continue;
            }
            let slave: OwnedFd = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.dir.join(got.to_string()))
                .expect("opening the instance's pty slave")
                .into();
            let st = fstat(slave.as_fd()).expect("fstat of the pty slave");
            let key = key_from_stat(st.st_rdev, st.st_dev);
            kernel.maps.forget_tty(&key);
            return Pty { master, slave, key };
        }
    }
}

impl Drop for Devpts {
    fn drop(&mut self) {
        self.held.clear();
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn terminal_answers_written_into_a_master_are_not_input() {
    let mut kernel = kernel();
    let pty = Pty::open(&mut kernel);
    let ignored_before = kernel.maps.counters().answers_ignored;

    // A primary device attributes answer (DA1), as a terminal sends it.
    pty.keystroke(b"\x1b[?1;2c").release();
    assert!(
        kernel.maps.counters().answers_ignored > ignored_before,
        "the answer was not counted as ignored"
    );
    assert_eq!(
        kernel.maps.activity(&pty.key).map(|a| a.input_count),
        None,
        "an answer counted as input"
    );

    // A real key after it still is input.
    pty.keystroke(b"x").release();
    let activity = kernel.tty_activity(&pty.key, "the key in TTY_ACTIVITY");
    assert_eq!(
        (activity.input_count, activity.input_bytes),
        (1, 1),
        "{activity:?}"
    );
}

#[test]
fn writes_into_dev_null_and_pipes_are_not_terminal_activity() {
    let kernel = kernel();
    let (read_end, write_end) = pipe().expect("pipe");
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let writes_seen = |kernel: &Kernel| {
        let counters = kernel.maps.counters();
        let tty_write = counters
            .probes
            .iter()
            .find(|p| p.probe == Probe::TtyWrite.name());
        tty_write.expect("the write programs' counters").seen
    };
    let seen_before = writes_seen(&kernel);

    let (null_fd, pipe_fd) = (null.as_raw_fd(), write_end.as_raw_fd());
    Child::fork(move || raw_write(null_fd, b"nothing") && raw_write(pipe_fd, b"data")).release();

    // The syscall tracepoints see every write and must tell these apart; fentry's
    // programs sit on the tty's own write path, which these writes never reach.
    if kernel.probes.backend == probes::Backend::Tracepoint {
        let seen_after = writes_seen(&kernel);
        assert!(
            seen_after >= seen_before + 2,
            "the write programs did not see the writes ({seen_before} -> {seen_after})"
        );
    }
    let not_terminals: Vec<TtyKey> = kernel
        .maps
        .tty_keys()
        .into_iter()
        .filter(|k| k.rdev == mkdev(1, 3) || k.rdev == 0)
        .collect();
    assert!(
        not_terminals.is_empty(),
        "non-terminals in TTY_ACTIVITY: {not_terminals:?}"
    );
    let mut buf = [0u8; 4];
    nix::unistd::read(&read_end, &mut buf).expect("reading the pipe");
    assert_eq!(&buf, b"data");
}

#[test]
fn a_transports_writes_into_a_pipe_are_its_logins_input() {
    let mut kernel = kernel();
    const TRANSPORT_LOGIN: LoginId = 0x7e57_0001;
    const MEMBER_LOGIN: LoginId = 0x7e57_0002;
    let (_read_end, write_end) = pipe().expect("pipe");
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let (null_fd, pipe_fd) = (null.as_raw_fd(), write_end.as_raw_fd());

    // sshd's per-connection process writing into the pipe to `ssh host cmd`.
    let transport =
        Child::fork(move || raw_write(null_fd, b"not input") && raw_write(pipe_fd, b"hello"));
    let transport_tgid = transport.tgid();
    kernel
        .maps
        .adopt(transport_tgid, TRANSPORT_LOGIN, TRANSPORT)
        .expect("adopting the transport");
    // A process of a login that is not its transport.
    let member = Child::fork(move || raw_write(pipe_fd, b"output"));
    kernel
        .maps
        .adopt(member.tgid(), MEMBER_LOGIN, 0)
        .expect("adopting the member");

    let before = boot_ns();
    transport.release();
    member.release();
    let after = boot_ns();

    let input = wait_until("the login's input in LOGIN_ACTIVITY", SHOWS, || {
        kernel.maps.login_activity(TRANSPORT_LOGIN)
    });
    assert_input(
        "the pipe write (not the /dev/null one)",
        (input.input_count, input.input_bytes),
        input.last_input_ns,
        (1, 5),
        (before, after),
    );
    let notice = kernel.event("LoginInput of the login", |e| {
        e.kind() == Some(EventKind::LoginInput) && e.login == TRANSPORT_LOGIN
    });
    assert_eq!(notice.tgid, transport_tgid);
    assert_eq!(
        kernel.maps.login_activity(MEMBER_LOGIN),
        None,
        "a member's pipe write counted as its login's input"
    );
}

/// What a transport writes is input only in channels it made for its programs: a
/// socket pair another process made (an ssh connection's monitor's, which its user
/// side inherits) is not one, whoever writes into it.
#[test]
fn a_transports_writes_into_a_socket_pair_it_did_not_make_are_not_input() {
    let mut kernel = kernel();
    const LOGIN: LoginId = 0x7e57_0004;
    // SAFETY: two descriptors just made and owned by nothing else.
    let theirs = unix_socket_pair()
        .expect("a socket pair")
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let theirs_fd = theirs[0].as_raw_fd();

    let transport = Child::fork(move || {
        unix_socket_pair()
            .is_some_and(|own| raw_write(theirs_fd, b"inherited") && raw_write(own[0], b"own!"))
    });
    kernel
        .maps
        .adopt(transport.tgid(), LOGIN, TRANSPORT)
        .expect("adopting the transport");
    transport.release();

    let input = wait_until("the login's input in LOGIN_ACTIVITY", SHOWS, || {
        kernel.maps.login_activity(LOGIN)
    });
    assert_eq!(
        (input.input_count, input.input_bytes),
        (1, 4),
        "only the write into the transport's own socket pair is input"
    );
}

/// A connected pair of AF_UNIX stream sockets (a raw call: a forked child makes one
/// too, where nothing may allocate).
fn unix_socket_pair() -> Option<[RawFd; 2]> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two descriptors the call returns.
    let made = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    (made == 0).then_some(fds)
}

#[test]
fn a_fork_joins_its_parents_login_and_a_watched_exit_is_reported() {
    let mut kernel = kernel();
    const LOGIN: LoginId = 0x7e57_0003;
    let me = std::process::id();

    // This process joins a login: what it forks joins it too, threads do not count.
    kernel
        .maps
        .adopt(me, LOGIN, 0)
        .expect("adopting the test process");
    let watched = Child::fork(|| true);
    let member = Child::fork(|| true);
    let thread_tid = std::thread::spawn(|| nix::unistd::gettid().as_raw() as u32)
        .join()
        .expect("thread");
    kernel.maps.untrack(me);
    let outsider = Child::fork(|| true);

    for child in [&watched, &member] {
        let state = wait_until("the child in PROCS", SHOWS, || {
            kernel.maps.proc_state(child.tgid())
        });
        assert_eq!(
            state,
            ProcState {
                login: LOGIN,
                ..ProcState::default()
            },
            "a child gets its parent's login and no flags"
        );
    }
    assert_eq!(
        kernel.maps.proc_state(thread_tid),
        None,
        "a thread in PROCS"
    );
    assert_eq!(
        kernel.maps.proc_state(outsider.tgid()),
        None,
        "a child of a process of no login in PROCS"
    );

    // The daemon watches the exit of one of them.
    let (watched_tgid, member_tgid) = (watched.tgid(), member.tgid());
    kernel
        .maps
        .adopt(watched_tgid, LOGIN, WATCH_EXIT)
        .expect("watching the exit");
    watched.release();
    member.release();
    outsider.release();
    for tgid in [watched_tgid, member_tgid] {
        wait_until("an exited process gone from PROCS", SHOWS, || {
            kernel.maps.proc_state(tgid).is_none().then_some(())
        });
    }
    kernel.event("ProcessExit of the watched child", |e| {
        e.kind() == Some(EventKind::ProcessExit) && e.tgid == watched_tgid
    });
    let unwatched =
        kernel.events(|e| e.kind() == Some(EventKind::ProcessExit) && e.tgid == member_tgid);
    assert!(
        unwatched.is_empty(),
        "an unwatched exit reported: {unwatched:?}"
    );
}

/// What the map holds under a pid (an entry the daemon made for a process that had
/// already exited) does not pass to the next process given that pid: a fork clears
/// it, whoever forks.
#[test]
fn a_new_process_owns_nothing_left_under_its_pid() {
    let mut kernel = kernel();
    const STALE: LoginId = 0x7e57_0009;
    let (pid, child) = (0..100)
        .find_map(|attempt| {
            let pid = unused_pid(attempt)?;
            kernel
                .maps
                .adopt(pid, STALE, WATCH_EXIT)
                .expect("an entry for a pid nobody has");
            let child = Child::fork_as(pid, || true);
            if child.is_none() {
                kernel.maps.untrack(pid);
            }
            Some((pid, child?))
        })
        .expect("no free pid to fork as in 100 attempts");
    let left = kernel.maps.proc_state(pid);
    child.release();
    assert_eq!(
        left, None,
        "process {pid} was forked with the entry left under its pid"
    );
}

/// A pid that no process has now, from the top of the pid range down.
fn unused_pid(attempt: u32) -> Option<u32> {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("reading pid_max")
        .trim()
        .parse()
        .expect("pid_max is a number");
    let pid = max - 1 - (std::process::id() + attempt * 7919) % (max / 2);
    (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

#[test]
fn a_listeners_fork_is_reported() {
    let mut kernel = kernel();
    let me = std::process::id();
    kernel
        .maps
        .adopt(me, 0, LISTENER)
        .expect("making the test process a listener");
    let connection = Child::fork(|| true);
    kernel.maps.untrack(me);
    let forked = kernel.event("ListenerForked of the test process", |e| {
        e.kind() == Some(EventKind::ListenerForked) && e.tgid == me
    });
    assert_eq!(forked.child_tgid, connection.tgid());
    assert_eq!(forked.login, 0, "the listener belongs to no login");
    assert_eq!(
        kernel.maps.proc_state(connection.tgid()),
        None,
        "a child of a listener of no login joined one"
    );
    connection.release();
}

#[test]
fn a_udp_datagram_received_by_a_watched_process_is_recorded() {
    let mut kernel = kernel();
    const LOGIN: LoginId = 0x7e57_0004;
    let me = std::process::id();
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    server.set_read_timeout(Some(SHOWS)).expect("read timeout");
    let receive = || {
        client
            .send_to(b"mosh", server.local_addr().expect("address"))
            .expect("send");
        let mut buf = [0u8; 16];
        let (n, _) = server.recv_from(&mut buf).expect("receive");
        assert_eq!(&buf[..n], b"mosh");
    };

    // Not watched (a member of a login without WATCH_UDP): nothing recorded.
    kernel.maps.adopt(me, LOGIN, 0).expect("adopting");
    receive();
    let unwatched = kernel.maps.proc_state(me).expect("in PROCS");
    assert_eq!(unwatched.last_udp_ns, 0, "{unwatched:?}");

    // A Mosh server is watched.
    kernel
        .maps
        .adopt(me, LOGIN, WATCH_UDP)
        .expect("watching UDP");
    let before = boot_ns();
    receive();
    let after = boot_ns();
    let watched = kernel.maps.proc_state(me).expect("in PROCS");
    kernel.maps.untrack(me);
    assert!(
        (before..=after).contains(&watched.last_udp_ns),
        "last UDP receive at {} ns, not between {before} and {after}",
        watched.last_udp_ns
    );
    assert_eq!((watched.login, watched.flags), (LOGIN, WATCH_UDP));
}

#[test]
fn a_revoked_users_keystroke_is_stopped_in_the_kernel() {
    let mut kernel = kernel();
    assert!(
        kernel.probes.kernel_revoke,
        "the kernel refused in-kernel revocation (bpf_send_signal)"
    );
    // A uid no account has: only the kernel's view of the writer matters.
    const REVOKED: u32 = 60_151;
    let pty = Pty::open(&mut kernel);
    let signals_before = kernel.maps.counters().revoke_signals;
    kernel
        .maps
        .set_revoked_uid(REVOKED, true)
        .expect("revoking the uid");

    let master = pty.master.as_raw_fd();
    let transport = Child::fork(move || {
        // SAFETY: plain system calls.
        let became = unsafe { libc::setgid(REVOKED) == 0 && libc::setuid(REVOKED) == 0 };
        // A whole line, so that it would be readable on the slave had it arrived.
        became && raw_write(master, b"k\n")
    });
    let transport_tgid = transport.tgid();
    let status = transport.release_until_exit();
    let revoked_uids = kernel.maps.revoked_uids();
    kernel
        .maps
        .set_revoked_uid(REVOKED, false)
        .expect("lifting the revocation");
    assert_eq!(revoked_uids, [REVOKED]);

    assert_eq!(
        status,
        WaitStatus::Signaled(Pid::from_raw(transport_tgid as i32), Signal::SIGKILL, false),
        "the revoked writer was not killed"
    );
    assert!(kernel.maps.counters().revoke_signals > signals_before);
    assert_eq!(
        kernel.maps.activity(&pty.key).map(|a| a.input_count),
        None,
        "a revoked keystroke counted as input"
    );
    let blocked = kernel.event("RevokedInputBlocked of the terminal", |e| {
        e.kind() == Some(EventKind::RevokedInputBlocked) && e.key == pty.key
    });
    assert_eq!((blocked.tgid, blocked.uid), (transport_tgid, REVOKED));
    // Nothing reached the terminal: the slave has no line to read.
    let flags =
        nix::fcntl::fcntl(pty.slave.as_fd(), nix::fcntl::FcntlArg::F_GETFL).expect("F_GETFL");
    nix::fcntl::fcntl(
        pty.slave.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(
            nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK,
        ),
    )
    .expect("F_SETFL");
    let mut buf = [0u8; 8];
    assert_eq!(
        nix::unistd::read(&pty.slave, &mut buf),
        Err(nix::errno::Errno::EAGAIN),
        "the revoked keystroke reached the terminal"
    );
}
