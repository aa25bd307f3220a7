//! Tracepoint backend: the same signals as the fentry backend, from classic tracepoints
//! only, for kernels that refuse trampolines and kprobes.
//!
//! - input and output: `sys_enter_write` / `sys_enter_writev` on a terminal fd;
//! - input without a terminal: the same programs, when a login's transport writes
//!   into a pipe or an AF_UNIX socket that it made (`send*` calls are not seen here);
//! - resize: `sys_enter_ioctl(TIOCSWINSZ)` on a pty master;
//! - console input: a `read` that took input from a console, at its exit
//!   (`sys_exit_read`; the descriptor from the registers saved at the call's entry),
//!   less what the console's session put there itself (`sys_enter_ioctl(TIOCSTI)`);
//!   attached only while a login has a console terminal;
//! - UDP: `sock_recv_length` where the kernel has it (6.3+), as a BTF tracepoint (no
//!   perf record for every socket receive on the host), otherwise the exits of
//!   `recvmsg` and `recvfrom` by processes tracked for UDP liveness.
//!
//! Field offsets inside each tracepoint record come from its tracefs `format` file.

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_probe_read_user,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use session_monitor_common::{
    Probe, Stat, TtyClass, TtyKey,
    dev::{TIOCSTI, TIOCSWINSZ},
};

use crate::{
    activity::{self, ByHelper, UserBytes},
    config::conf,
    kernel::{
        self, Access, ConsoleInput, CurrentFile, FileKind, IoVec, ReadError, TakenBytes, Task,
        Typed, Untyped,
    },
    maps::{self, bump},
};

const IPPROTO_UDP: u16 = 17;
/// How many iovecs of a `writev` are summed for the byte count.
const WRITEV_MAX_IOV: usize = 4;

/// A field of the tracepoint's record. The verifier allows a direct load from the
/// record only at an offset written in the instruction, so the offsets system-call
/// records use on every kernel we know (arguments at 16, 24 and 32, after the common
/// header and `__syscall_nr`) get one each; any other layout takes a helper read.
/// The offset is a load-time constant, so the verifier walks only the branch taken.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, ReadError> {
    let record = ctx.as_ptr() as *const u8;
    // SAFETY: inside the record, at the offset its format file gives for the field.
    unsafe {
        match offset {
            16 => return Ok(core::ptr::read_volatile(record.add(16) as *const T)),
            24 => return Ok(core::ptr::read_volatile(record.add(24) as *const T)),
            32 => return Ok(core::ptr::read_volatile(record.add(32) as *const T)),
            _ => {}
        }
        ctx.read_at::<T>(offset as usize).map_err(|_| ReadError)
    }
}

#[inline(always)]
fn syscall_fd(ctx: &TracePointContext) -> Result<u32, ReadError> {
    let fd: u64 = field(ctx, conf!(tracepoints.sys_enter_fd))?;
    Ok(fd as u32)
}

#[tracepoint]
pub fn tp_write(ctx: TracePointContext) -> u32 {
    bump(Probe::TtyWrite, Stat::Seen);
    let _ = try_write(&ctx);
    0
}

/// Runs `$f::<A>(ctx, task, file)` on the file behind the call's descriptor (or
/// behind descriptor `$fd`), with `task` the current one (the caller, whose process
/// id is then one load) and `A` the way that file can be read (see [`CurrentFile`]).
macro_rules! on_current_file {
    ($f:ident, $ctx:expr) => {
        on_current_file!($f, $ctx, syscall_fd($ctx)?)
    };
    ($f:ident, $ctx:expr, $fd:expr) => {{
        let task = Task::current();
        match kernel::current_file(task, $fd)? {
            CurrentFile::Typed(file) => $f::<Typed>($ctx, task, file),
            CurrentFile::Untyped(file) => $f::<Untyped>($ctx, task, file),
        }
    }};
}

fn try_write(ctx: &TracePointContext) -> Result<(), ReadError> {
    on_current_file!(write_to, ctx)
}

#[inline(always)]
fn write_to<A: Access>(
    ctx: &TracePointContext,
    task: Task,
    file: *const u8,
) -> Result<(), ReadError> {
    let tty = match kernel::file_kind::<A>(file)? {
        FileKind::Tty(tty) => tty,
        other => {
            return transport_write::<A>(task, other, file, || {
                field(ctx, conf!(tracepoints.sys_enter_write_count))
            });
        }
    };
    let count: u64 = field(ctx, conf!(tracepoints.sys_enter_write_count))?;
    if count == 0 {
        return Ok(());
    }
    let first = || {
        let addr: u64 = field(ctx, conf!(tracepoints.sys_enter_write_buf))?;
        Ok(UserBytes {
            addr,
            len: count,
            total: count,
        })
    };
    activity::tty_written::<A, _, _, _>(ctx, task, &tty, count, first)
}

#[tracepoint]
pub fn tp_writev(ctx: TracePointContext) -> u32 {
    bump(Probe::TtyWrite, Stat::Seen);
    let _ = try_writev(&ctx);
    0
}

fn try_writev(ctx: &TracePointContext) -> Result<(), ReadError> {
    on_current_file!(writev_to, ctx)
}

#[inline(always)]
fn writev_to<A: Access>(
    ctx: &TracePointContext,
    task: Task,
    file: *const u8,
) -> Result<(), ReadError> {
    let tty = match kernel::file_kind::<A>(file)? {
        FileKind::Tty(tty) => tty,
        other => return transport_write::<A>(task, other, file, || Ok(writev_sum(ctx)?.bytes)),
    };
    let vlen: u64 = field(ctx, conf!(tracepoints.sys_enter_writev_vlen))?;
    let WritevSum {
        bytes,
        summed,
        first,
    } = writev_sum(ctx)?;
    if bytes == 0 && vlen == 0 {
        return Ok(());
    }
    // More buffers than were summed: the total is not known, so nothing can be judged
    // whole (a burst of answers is still judged by its first bytes).
    let total = if summed < vlen { u64::MAX } else { bytes };
    let first = || {
        Ok(UserBytes {
            addr: first.base,
            len: first.len,
            total,
        })
    };
    activity::tty_written::<A, _, _, _>(ctx, task, &tty, bytes, first)
}

/// What a `writev` carries, from its first iovecs.
struct WritevSum {
    /// Bytes in the buffers summed.
    bytes: u64,
    /// How many buffers were summed (at most [`WRITEV_MAX_IOV`]).
    summed: u64,
    /// The first buffer, where the answers filter looks.
    first: IoVec,
}

#[inline(always)]
fn writev_sum(ctx: &TracePointContext) -> Result<WritevSum, ReadError> {
    let vec: u64 = field(ctx, conf!(tracepoints.sys_enter_writev_vec))?;
    let vlen: u64 = field(ctx, conf!(tracepoints.sys_enter_writev_vlen))?;
    let mut sum = WritevSum {
        bytes: 0,
        summed: 0,
        first: IoVec { base: 0, len: 0 },
    };
    let iov = vec as *const IoVec;
    for i in 0..WRITEV_MAX_IOV {
        if i as u64 >= vlen {
            break;
        }
        // SAFETY: user memory read through the helper; failure ends the sum.
        match unsafe { bpf_probe_read_user(iov.wrapping_add(i)) } {
            Ok(v) => {
                if i == 0 {
                    sum.first = v;
                }
                sum.bytes = sum.bytes.wrapping_add(v.len);
                sum.summed += 1;
            }
            Err(_) => break,
        }
    }
    Ok(sum)
}

/// A write by `task` that found no terminal: a login's input if a transport writes
/// into a pipe or AF_UNIX socket it made (see [`activity::transport_login`] for why).
/// The transport test (a load from the transports' bitmap) comes before any further
/// read, so the pipe and socket writes of every other process cost only that.
#[inline(always)]
fn transport_write<A: Access>(
    task: Task,
    kind: FileKind,
    file: *const u8,
    bytes: impl FnOnce() -> Result<u64, ReadError>,
) -> Result<(), ReadError> {
    if !matches!(kind, FileKind::Pipe(_) | FileKind::Socket) {
        return Ok(());
    }
    let Some(login) = activity::transport_login(task) else {
        return Ok(());
    };
    bump(Probe::PipeInput, Stat::Seen);
    let made_by_writer = match kind {
        FileKind::Pipe(inode) => kernel::pipe_made_by_current_user::<A>(inode)?,
        _ => kernel::unix_socket_made_by_current::<A>(file)?,
    };
    if !made_by_writer {
        return Ok(());
    }
    let bytes = bytes()?;
    if bytes > 0 {
        activity::login_input(task, Probe::PipeInput, login, bytes);
    }
    Ok(())
}

#[tracepoint]
pub fn tp_ioctl(ctx: TracePointContext) -> u32 {
    bump(Probe::TtyResize, Stat::Seen);
    let _ = try_ioctl(&ctx);
    0
}

fn try_ioctl(ctx: &TracePointContext) -> Result<(), ReadError> {
    let cmd: u64 = field(ctx, conf!(tracepoints.sys_enter_ioctl_cmd))?;
    match cmd as u32 {
        TIOCSWINSZ => on_current_file!(resized, ctx),
        TIOCSTI => on_current_file!(injecting, ctx),
        _ => Ok(()),
    }
}

#[inline(always)]
fn resized<A: Access>(
    ctx: &TracePointContext,
    task: Task,
    file: *const u8,
) -> Result<(), ReadError> {
    match kernel::classify_file::<A>(file)? {
        Some(tty) => activity::tty_resized::<A, _, _>(ctx, task, &tty),
        None => Ok(()),
    }
}

/// A TIOCSTI into a console by a process whose controlling terminal it is: the
/// console's session typing into itself. Its byte is counted, to be taken from the
/// next reads of the console (see [`tp_read_exit`]). Only such a process, or one with
/// CAP_SYS_ADMIN, may do it; from outside the session, that is someone typing.
#[inline(always)]
fn injecting<A: Access>(
    ctx: &TracePointContext,
    task: Task,
    file: *const u8,
) -> Result<(), ReadError> {
    let Some((key, Some(_))) = console_read::<A>(ctx, task, file)? else {
        return Ok(());
    };
    let ctty = kernel::current_ctty()?;
    if ctty.is_null() || kernel::console_key::<Typed>(ctty)? != key {
        return Ok(());
    }
    if let Some(state) = maps::console_state(key) {
        state.injected += 1;
    }
    Ok(())
}

/// Console input: a read(2) that took input from a console, by a process whose
/// controlling terminal is a console. Only the exit is hooked, so every other read
/// on the host pays one program (two loads) and one perf record, not two; and only
/// while some login has a console terminal, the only time the daemon attaches it.
///
/// The descriptor is the call's first argument, still in the registers saved at
/// its entry. What it names at the exit need not be what the read read: another
/// thread sharing the descriptor table may have put a console there as a read of a
/// pipe returned. So a read counts only if the console's input was taken since the
/// last read counted on it (n_tty's `read_tail` moved): no read of anything else
/// moves it.
#[tracepoint]
pub fn tp_read_exit(ctx: TracePointContext) -> u32 {
    bump(Probe::ConsoleInput, Stat::Seen);
    let _ = try_read_exit(&ctx);
    0
}

fn try_read_exit(ctx: &TracePointContext) -> Result<(), ReadError> {
    if !console_process()? {
        return Ok(());
    }
    let ret: i64 = field(ctx, conf!(tracepoints.sys_exit_ret))?;
    if ret <= 0 {
        return Ok(());
    }
    let fd = kernel::current_syscall_arg0()? as u32;
    let Some((key, Some(console))) = on_current_file!(console_read, ctx, fd)? else {
        return Ok(());
    };
    let Some(state) = maps::console_state(key) else {
        return Ok(());
    };
    if state.taken == console.taken {
        return Ok(());
    }
    state.taken = console.taken;
    let read = ret as u64;
    // Bytes the session injected were taken by this read, maybe not all of them, maybe
    // with others: none of it counts.
    let injected = state.injected > 0;
    if injected {
        state.injected = state.injected.saturating_sub(read);
    }
    let piece = TakenBytes { console, len: read };
    activity::console_input(ctx, ByHelper, key, read, injected, piece);
    Ok(())
}

/// True when a console process calls: console input is read by a process of the
/// console's session, so this is the first test, and it spares every other read on
/// the host the rest for two direct loads (a daemon, no controlling terminal) or
/// four (a process on a pseudo-terminal).
#[inline(always)]
fn console_process() -> Result<bool, ReadError> {
    let ctty = kernel::current_ctty()?;
    Ok(!ctty.is_null() && kernel::tty_is_console(ctty)?)
}

/// The key of the console `file` is, if it is one, and its input.
#[inline(always)]
fn console_read<A: Access>(
    _ctx: &TracePointContext,
    _task: Task,
    file: *const u8,
) -> Result<Option<(TtyKey, Option<ConsoleInput>)>, ReadError> {
    let Some(tty) = kernel::classify_file::<A>(file)? else {
        return Ok(None);
    };
    if tty.class != TtyClass::Console {
        return Ok(None);
    }
    kernel::console_file_input::<A>(&tty).map(Some)
}

/// `sock_recv_length(struct sock *sk, int ret, int flags)`: every socket receive on
/// the host, TCP included, so the protocol (one direct load) is tested first.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn tp_sock_recv(ctx: BtfTracePointContext) -> u32 {
    bump(Probe::UdpRecv, Stat::Seen);
    let sk: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    if kernel::sock_protocol(sk).is_ok_and(|p| p == IPPROTO_UDP) && ret > 0 {
        activity::udp_received();
    }
    0
}

#[tracepoint]
pub fn tp_recvmsg_exit(ctx: TracePointContext) -> u32 {
    bump(Probe::UdpRecv, Stat::Seen);
    let _ = try_recv_exit(&ctx);
    0
}

#[tracepoint]
pub fn tp_recvfrom_exit(ctx: TracePointContext) -> u32 {
    bump(Probe::UdpRecv, Stat::Seen);
    let _ = try_recv_exit(&ctx);
    0
}

/// Fallback for kernels without `sock_recv_length` (before 6.3): a successful
/// `recvmsg` or `recvfrom` by a process tracked for UDP liveness, i.e. a Mosh server,
/// whose only sockets are its UDP ones. The tracked-process lookup comes first: these
/// fire for every receive on the machine. (`skb:skb_copy_datagram_iovec`, which also
/// exists everywhere, misses UDP: small datagrams are linear and `udp_recvmsg` copies
/// those with `copy_linear_skb`, which has no tracepoint.)
fn try_recv_exit(ctx: &TracePointContext) -> Result<(), ReadError> {
    if activity::tracked_udp_process().is_none() {
        return Ok(());
    }
    let ret: i64 = field(ctx, conf!(tracepoints.sys_exit_ret))?;
    if ret > 0 {
        activity::udp_received();
    }
    Ok(())
}
