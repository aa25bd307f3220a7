//! What both backends do once they have classified an event. Keeping it in one place
//! is what makes the backends agree: they differ only in how they find the file, the
//! terminal and the byte count.
//!
//! Activity is aggregated in maps; the ring buffer only carries state changes (a
//! terminal seen for the first time, at most one input notice per terminal or login
//! per interval, a tracked process exiting, a listener forking, input blocked for a
//! revoked user).

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_send_signal, generated,
    },
    maps::HashMap,
};
use aya_log_ebpf::debug;
use session_monitor_common::{
    Event, EventKind, InputActivity, LoginId, NO_LOGIN, Probe, ProcState, Stat, TtyActivity,
    TtyClass, TtyKey,
    answers::{ANSWER_PREFIX, AnswerStream, SHORTEST_ANSWER, only_answers},
    config::flags,
    counters::{
        COUNTER_ANSWERS_IGNORED, COUNTER_INJECTIONS_IGNORED, COUNTER_LOGIN_INSERT_FAILURES,
        COUNTER_PROCS_INSERT_FAILURES, COUNTER_REVOKE_SIGNALS,
    },
    state::{pid_bits, proc_flags},
};

use crate::{
    config::conf,
    kernel::{self, Access, ConsoleBytes, ReadError, TtyFile, Typed},
    maps::{
        EVENTS, LOGIN_ACTIVITY, PROCS, PtsEntry, REVOKED_ANY, REVOKED_UIDS, TRANSPORT_PIDS,
        TTY_ACTIVITY, bump, bump_slot, mark_forked, maybe_in_procs, pts_entry,
    },
};

const SIGKILL: u32 = 9;

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The process a program runs in, as its backend can name it: asked for its process
/// id only on the paths that need it (input, and the transport test of a pipe or
/// socket write). Where the backend holds the current task already (the tracepoint
/// backend walked its descriptor table) that is one load ([`kernel::Task`]), where
/// it does not, a helper call ([`ByHelper`]).
pub trait Caller: Copy {
    fn tgid(self) -> u32;
}

impl Caller for kernel::Task {
    #[inline(always)]
    fn tgid(self) -> u32 {
        kernel::Task::tgid(self).unwrap_or_else(|_| current_tgid())
    }
}

/// The current process, asked through `bpf_get_current_pid_tgid`.
#[derive(Clone, Copy)]
pub struct ByHelper;

impl Caller for ByHelper {
    #[inline(always)]
    fn tgid(self) -> u32 {
        current_tgid()
    }
}

/// What one event says besides its kind and the current process (which every record
/// names): see [`EventKind`] for which kind fills what.
#[derive(Default)]
struct Concerns {
    key: TtyKey,
    login: LoginId,
    child_tgid: u32,
}

/// Sends one event about the current process; a full ring buffer is counted, never
/// waited for.
#[inline(always)]
fn emit(probe: Probe, kind: EventKind, concerns: Concerns) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump(probe, Stat::Dropped);
        return;
    };
    entry.write(Event {
        kind: kind as u32,
        tgid: current_tgid(),
        uid: bpf_get_current_uid_gid() as u32,
        child_tgid: concerns.child_tgid,
        key: concerns.key,
        login: concerns.login,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    entry.submit(0);
    bump(probe, Stat::Sent);
}

/// An event about login `login`.
#[inline(always)]
fn login_event(login: LoginId) -> Concerns {
    Concerns {
        login,
        ..Concerns::default()
    }
}

/// An event about terminal `key`.
#[inline(always)]
fn tty_event(key: TtyKey) -> Concerns {
    Concerns {
        key,
        ..Concerns::default()
    }
}

/// Where the bytes of a write start in the writer's memory: the first buffer the
/// system call was given and its length (a `writev` has more after it), and the
/// length of the whole write (`u64::MAX` when not known).
pub struct UserBytes {
    pub addr: u64,
    pub len: u64,
    pub total: u64,
}

/// A write into a terminal by `caller`, seen by either backend: into a master it is
/// input, into a slave it is output (only used to notice the terminal). `first`
/// finds the written bytes; it is only called for a master write of two bytes or
/// more, so no other write (and no single typed letter) pays for it.
#[inline(always)]
pub fn tty_written<
    A: Access,
    C: EbpfContext,
    W: Caller,
    F: FnOnce() -> Result<UserBytes, ReadError>,
>(
    ctx: &C,
    caller: W,
    tty: &TtyFile,
    bytes: u64,
    first: F,
) -> Result<(), ReadError> {
    match tty.class {
        TtyClass::PtyMaster => {
            if bytes >= SHORTEST_ANSWER && only_answers_written(first) {
                bump_slot(COUNTER_ANSWERS_IGNORED);
                return Ok(());
            }
            let key = kernel::master_slave_key::<A>(tty.file)?;
            input(ctx, caller, Probe::TtyWrite, key, bytes);
        }
        TtyClass::PtySlave => {
            let key = kernel::slave_file_key::<A>(tty)?;
            output(Probe::TtyWrite, key);
        }
        // Writes to a console are output. One by a process of a console's own session
        // notices that console, as a first write does a pseudo-terminal: its login is
        // found from the shell's prompt, before anything is typed (the tracepoint
        // backend watches console reads only while a login has a console).
        TtyClass::Console => {
            let ctty = kernel::current_ctty()?;
            if !ctty.is_null() && kernel::tty_is_console(ctty)? {
                output(Probe::TtyWrite, kernel::console_key::<Typed>(ctty)?);
            }
        }
    }
    Ok(())
}

/// True when a write into a pty master holds only terminal answers (see
/// `session_monitor_common::answers`). Reads at most `ANSWER_PREFIX` bytes of the
/// writer's memory onto the stack; anything unreadable counts as input.
#[inline(always)]
fn only_answers_written<F: FnOnce() -> Result<UserBytes, ReadError>>(first: F) -> bool {
    let Ok(user) = first() else {
        return false;
    };
    let len = user.len.min(user.total).min(ANSWER_PREFIX as u64);
    if len == 0 {
        return false;
    }
    // Masked where it is used: older verifiers (6.1) lose a bound the compiler proved
    // when the value is spilled to the stack and read back, and then refuse the read.
    // `len` is 1..=64 here, so this keeps it as it is.
    let len = ((len - 1) & (ANSWER_PREFIX as u64 - 1)) + 1;
    // Not zeroed first: the helper's destination may be uninitialised (the verifier
    // then counts all of it as written), and zeroing 64 bytes is a call to the
    // builtin `memset`, a loop of one-byte stores that every paste paid.
    let mut buf = MaybeUninit::<[u8; ANSWER_PREFIX]>::uninit();
    // SAFETY: the helper checks the user address and fails on a bad one; it writes
    // at most `len` (<= 64) bytes into `buf`.
    let read = unsafe {
        generated::bpf_probe_read_user(
            buf.as_mut_ptr().cast(),
            len as u32,
            user.addr as *const c_void,
        )
    };
    if read != 0 {
        return false;
    }
    // SAFETY: the helper succeeded, so it wrote the first `len` bytes.
    let seen = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len as usize) };
    only_answers(seen, user.total)
}

/// Console input, seen by either backend: `bytes` that reached console `key`'s line
/// discipline (fentry) or that a read took from it (tracepoint), found in kernel
/// memory through `piece`. Not input when the console's own session put it there
/// (`injected`), nor when it holds only the console's answers to questions a program
/// asked it: the console answers into its own input, where keystrokes arrive.
#[inline(always)]
pub fn console_input<C: EbpfContext, W: Caller, P: ConsoleBytes>(
    ctx: &C,
    caller: W,
    key: TtyKey,
    bytes: u64,
    injected: bool,
    piece: P,
) {
    if injected {
        bump_slot(COUNTER_INJECTIONS_IGNORED);
    } else if !piece_holds_input(bytes, &piece) {
        bump_slot(COUNTER_ANSWERS_IGNORED);
    } else {
        input(ctx, caller, Probe::ConsoleInput, key, bytes);
    }
}

/// True when a piece of `len` bytes of console input holds input, judged from its
/// first `ANSWER_PREFIX` bytes and, for a longer piece, its last ones too, each from
/// a point the parser does not know (see [`AnswerStream`]). The bytes between are
/// not looked at. Bytes that cannot be read are input.
#[inline(always)]
fn piece_holds_input<P: ConsoleBytes>(len: u64, piece: &P) -> bool {
    const WINDOW: u64 = ANSWER_PREFIX as u64;
    // Zeroed: the parser's loop runs over whole windows (console input only pays it).
    let (mut head, mut tail) = ([0; ANSWER_PREFIX], [0; ANSWER_PREFIX]);
    let Ok((a, b)) = piece.window(0, len.min(WINDOW), &mut head, &mut tail) else {
        return true;
    };
    let mut answers = AnswerStream::unknown();
    if answers.holds_input(&head, a) || answers.holds_input(&tail, b) {
        return true;
    }
    if len <= WINDOW {
        return false;
    }
    let Ok((a, b)) = piece.window(len - WINDOW, WINDOW, &mut head, &mut tail) else {
        return true;
    };
    let mut answers = AnswerStream::unknown();
    answers.holds_input(&head, a) || answers.holds_input(&tail, b)
}

/// A resize of a pty master by `caller`: the user's window changed, which counts as
/// presence.
#[inline(always)]
pub fn tty_resized<A: Access, C: EbpfContext, W: Caller>(
    ctx: &C,
    caller: W,
    tty: &TtyFile,
) -> Result<(), ReadError> {
    if tty.class == TtyClass::PtyMaster {
        let key = kernel::master_slave_key::<A>(tty.file)?;
        input(ctx, caller, Probe::TtyResize, key, 0);
    }
    Ok(())
}

/// User input on terminal `key`, written by `caller` (its transport).
#[inline(always)]
pub fn input<C: EbpfContext, W: Caller>(ctx: &C, caller: W, probe: Probe, key: TtyKey, bytes: u64) {
    bump(probe, Stat::Matched);
    if caller.tgid() == conf!(self_tgid) {
        return;
    }
    if revoked_writer(probe, key, NO_LOGIN) {
        return;
    }
    let counted = match pts_entry(&key) {
        PtsEntry::Held(slot) => count_again(&mut slot.activity, bytes),
        PtsEntry::Claimed(slot) => {
            slot.activity = first_input(bytes);
            Counted::First
        }
        PtsEntry::Elsewhere => count_input(&TTY_ACTIVITY, key, bytes),
    };
    match counted {
        Counted::First => {
            debug!(ctx, "terminal {}:{} first input", key.rdev, key.pts_dev);
            emit(probe, EventKind::TtyFirstInput, tty_event(key));
        }
        Counted::Again { notice: true } => emit(probe, EventKind::TtyInput, tty_event(key)),
        Counted::Again { notice: false } | Counted::Lost => {}
    }
}

/// What [`count_input`] did.
enum Counted {
    /// The key's first input: a new entry.
    First,
    /// Added to the key's entry; a notice is due when the last one is at least the
    /// notice interval old.
    Again { notice: bool },
    /// Not recorded: another CPU made the entry first (and reports it), or the map is
    /// full.
    Lost,
}

/// Adds one input of `bytes`, now, to `map[key]`.
#[inline(always)]
fn count_input<K>(map: &HashMap<K, InputActivity>, key: K, bytes: u64) -> Counted {
    if let Some(activity) = map.get_ptr_mut(&key) {
        // SAFETY: map value pointer from the kernel, valid for this program run.
        return count_again(unsafe { &mut *activity }, bytes);
    }
    match map.insert(&key, first_input(bytes), BPF_NOEXIST as u64) {
        Ok(()) => Counted::First,
        Err(_) => Counted::Lost,
    }
}

/// Adds one input of `bytes`, now, to an existing entry. The clock is read once per
/// kernel tick and entry: input in the tick of the last one counted keeps its time
/// (at most a tick early, nothing next to an idle timeout). Reading the tick is one
/// load the verifier inlines; reading the clock is a chain of calls, the dearest part
/// of a keystroke's program after the map lookup.
#[inline(always)]
fn count_again(activity: &mut InputActivity, bytes: u64) -> Counted {
    // SAFETY: helper without preconditions (inlined into a load of `jiffies_64`).
    let tick = unsafe { generated::bpf_jiffies64() };
    activity.input_bytes = activity.input_bytes.wrapping_add(bytes);
    activity.input_count = activity.input_count.wrapping_add(1);
    // Input in the tick of the last one counted keeps that one's time; the notice
    // interval is far longer than a tick, so no notice is due either. An entry made
    // by output alone (no notice yet) goes on.
    if activity.last_input_tick == tick && activity.last_notice_ns != 0 {
        return Counted::Again { notice: false };
    }
    let ts = now();
    activity.last_input_ns = ts;
    activity.last_input_tick = tick;
    // An entry made by output alone has had no notice yet (0): its first input is
    // reported whatever the interval and however long ago the boot was.
    let notice = activity.last_notice_ns == 0
        || ts.wrapping_sub(activity.last_notice_ns) >= conf!(notice_interval_ns);
    if notice {
        activity.last_notice_ns = ts;
    }
    Counted::Again { notice }
}

/// A new entry's first input of `bytes`, now (its notice goes out with it).
#[inline(always)]
fn first_input(bytes: u64) -> InputActivity {
    // SAFETY: helper without preconditions.
    let tick = unsafe { generated::bpf_jiffies64() };
    let ts = now();
    InputActivity {
        last_input_ns: ts,
        input_bytes: bytes,
        input_count: 1,
        last_notice_ns: ts,
        last_input_tick: tick,
    }
}

/// Program output on terminal `key`: only tells the daemon the terminal exists.
#[inline(always)]
fn output(probe: Probe, key: TtyKey) {
    let first = match pts_entry(&key) {
        PtsEntry::Held(_) => return,
        PtsEntry::Claimed(slot) => {
            bump(probe, Stat::Matched);
            slot.activity = TtyActivity::default();
            true
        }
        PtsEntry::Elsewhere => {
            if TTY_ACTIVITY.get_ptr(key).is_some() {
                return;
            }
            bump(probe, Stat::Matched);
            TTY_ACTIVITY
                .insert(key, TtyActivity::default(), BPF_NOEXIST as u64)
                .is_ok()
        }
    };
    if first {
        emit(probe, EventKind::TtyFirstOutput, tty_event(key));
    }
}

/// Stops input written by a transport that runs as a revoked user: SIGKILL to the
/// writer before the write is carried out (the tty write path checks for pending
/// signals before it copies anything), so the keystroke never reaches the shell. A
/// write into a pipe or socket (`login` set, `key` zero) may still deliver its bytes
/// (those paths check for signals only when they have to wait), but it is the
/// writer's last.
#[inline(always)]
fn revoked_writer(probe: Probe, key: TtyKey, login: LoginId) -> bool {
    if conf!(flags) & flags::KERNEL_REVOKE == 0 {
        return false;
    }
    // Nobody revoked (the common case): one load, no hash lookup.
    if REVOKED_ANY.get(0).is_none_or(|&any| any == 0) {
        return false;
    }
    let uid = bpf_get_current_uid_gid() as u32;
    // SAFETY: plain value lookup.
    if unsafe { REVOKED_UIDS.get(uid) }.is_none() {
        return false;
    }
    // SAFETY: signals the current task only.
    if unsafe { bpf_send_signal(SIGKILL) } == 0 {
        bump_slot(COUNTER_REVOKE_SIGNALS);
    }
    emit(
        probe,
        EventKind::RevokedInputBlocked,
        Concerns {
            key,
            login,
            ..Concerns::default()
        },
    );
    true
}

/// The login of `caller` if it is that login's transport (an ssh
/// connection's user-side sshd): done before anything else is read on the pipe and
/// socket paths, one load from the transports' bitmap and the hash lookup only for
/// a pid whose bit is set.
///
/// What a transport writes is its login's input only where it goes into a channel
/// the transport made for the login's programs: a pipe its user made, an AF_UNIX
/// socket pair it made (sshd's stdin and stdout of a command are one or the other).
/// Not into channels other processes made (the connection's monitor's socket pair
/// and log pipe), nor into sockets it accepted or connected to (a forwarded agent
/// or socket, which count no more than a forwarded port: a shell polling its
/// forwarded agent every second is not a person).
#[inline(always)]
pub fn transport_login<W: Caller>(caller: W) -> Option<LoginId> {
    let tgid = caller.tgid();
    let word = TRANSPORT_PIDS.get(pid_bits::word(tgid))?;
    if *word & pid_bits::bit(tgid) == 0 {
        return None;
    }
    let state = PROCS.get_ptr(tgid)?;
    // SAFETY: map value pointer from the kernel, valid for this program run.
    let state = unsafe { &*state };
    if state.flags & proc_flags::TRANSPORT == 0 || state.login == NO_LOGIN {
        return None;
    }
    Some(state.login)
}

/// Input of `login` without a terminal: its transport (`caller`) wrote `bytes` into
/// a pipe or AF_UNIX socket. Aggregated like terminal input; a notice goes out on the
/// login's first input and then at most once per interval.
#[inline(always)]
pub fn login_input<W: Caller>(caller: W, probe: Probe, login: LoginId, bytes: u64) {
    bump(probe, Stat::Matched);
    if caller.tgid() == conf!(self_tgid) {
        return;
    }
    if revoked_writer(probe, TtyKey::default(), login) {
        return;
    }
    match count_input(&LOGIN_ACTIVITY, login, bytes) {
        Counted::First | Counted::Again { notice: true } => {
            emit(probe, EventKind::LoginInput, login_event(login))
        }
        Counted::Again { notice: false } => {}
        Counted::Lost => {
            if LOGIN_ACTIVITY.get_ptr(login).is_none() {
                bump_slot(COUNTER_LOGIN_INSERT_FAILURES);
            }
        }
    }
}

/// A new task was created by the current one; `child` is its typed `task_struct`.
/// A new process (not a thread) joins its parent's login, with no flags; a listener's
/// child is reported. Every fork on the host comes here: for a parent the kernel does
/// not know, it costs the two pids' gate bits ([`maybe_in_procs`]).
#[inline(always)]
pub fn process_forked(child: *const u8) -> Result<(), ReadError> {
    let (pid, tgid) = kernel::task_ids(child)?;
    if pid != tgid {
        // A thread: its process is already where it belongs.
        return Ok(());
    }
    let current = current_tgid();
    let parent = match maybe_in_procs(current)
        .then(|| PROCS.get_ptr(current))
        .flatten()
    {
        // SAFETY: map value pointer from the kernel, valid for this program run.
        Some(state) => unsafe { *state },
        None => ProcState::default(),
    };
    let listener = parent.flags & proc_flags::LISTENER != 0;
    if parent.login == NO_LOGIN {
        // A brand-new process owns nothing the map may still hold under its pid
        // (an entry the daemon made for a process that exited before it was made).
        // Looked up first: a lookup takes no lock, a delete takes the bucket's, and
        // there is almost never anything to delete.
        if maybe_in_procs(tgid) && PROCS.get_ptr(tgid).is_some() {
            let _ = PROCS.remove(tgid);
            mark_forked(tgid, false);
        }
        if !listener {
            return Ok(());
        }
    } else {
        let state = ProcState {
            login: parent.login,
            ..ProcState::default()
        };
        // The gate opens first: the child runs only after this program.
        mark_forked(tgid, true);
        if PROCS.insert(tgid, state, BPF_ANY as u64).is_err() {
            bump_slot(COUNTER_PROCS_INSERT_FAILURES);
        }
    }
    bump(Probe::ProcessFork, Stat::Matched);
    if listener {
        emit(
            Probe::ProcessFork,
            EventKind::ListenerForked,
            Concerns {
                login: parent.login,
                child_tgid: tgid,
                ..Concerns::default()
            },
        );
    }
    Ok(())
}

/// A UDP datagram received by the current process; only tracked processes count.
#[inline(always)]
pub fn udp_received() {
    let Some(state) = tracked_udp_process() else {
        return;
    };
    bump(Probe::UdpRecv, Stat::Matched);
    // SAFETY: map value pointer from the kernel, valid for this program run.
    let state = unsafe { &mut *state };
    state.last_udp_ns = now();
}

/// The map entry of the current process if it is tracked for UDP liveness. This is
/// the first check on every UDP receive on the host, so the gate comes first: two
/// loads, and the hash lookup only for a process that may be in the map.
#[inline(always)]
pub fn tracked_udp_process() -> Option<*mut ProcState> {
    let tgid = current_tgid();
    if !maybe_in_procs(tgid) {
        return None;
    }
    let state = PROCS.get_ptr_mut(tgid)?;
    // SAFETY: map value pointer from the kernel.
    if unsafe { (*state).flags } & proc_flags::WATCH_UDP == 0 {
        return None;
    }
    Some(state)
}

/// The current task is exiting: when it is the last thread of a known process,
/// report it if tracked and forget it, so that a process reusing the pid is never
/// mistaken for it.
#[inline(always)]
pub fn process_exiting() {
    bump(Probe::ProcessExit, Stat::Seen);
    let tgid = current_tgid();
    if !maybe_in_procs(tgid) {
        return;
    }
    let Some(state) = PROCS.get_ptr(tgid) else {
        return;
    };
    // The process ends with its last thread, which need not be the leader.
    if !kernel::current_process_dead().unwrap_or(true) {
        return;
    }
    bump(Probe::ProcessExit, Stat::Matched);
    // SAFETY: map value pointer from the kernel.
    let watch_exit = unsafe { (*state).flags } & proc_flags::WATCH_EXIT != 0;
    let _ = PROCS.remove(tgid);
    // The gate closes after the entry is gone; the daemon's bit is the daemon's.
    mark_forked(tgid, false);
    if watch_exit {
        emit(
            Probe::ProcessExit,
            EventKind::ProcessExit,
            Concerns::default(),
        );
    }
}
