//! fentry backend, for stock kernels that allow BPF trampolines: hooks on the kernel
//! functions every terminal write, resize, console receive, UDP receive, pipe write
//! and AF_UNIX send goes through, whatever system call (or io_uring) started it.

use aya_ebpf::{macros::fentry, programs::FEntryContext};
use session_monitor_common::{Probe, Stat, dev::TIOCSWINSZ};

use crate::{
    activity::{self, ByHelper},
    kernel::{self, KernelBuffer, ReadError, Typed},
    maps::bump,
};

/// `ssize_t tty_write(struct kiocb *iocb, struct iov_iter *from)`: every write into a
/// terminal, whatever started it (write, writev, io_uring, splice).
#[fentry(function = "tty_write")]
pub fn fe_tty_write(ctx: FEntryContext) -> u32 {
    bump(Probe::TtyWrite, Stat::Seen);
    let _ = try_tty_write(&ctx);
    0
}

fn try_tty_write(ctx: &FEntryContext) -> Result<(), ReadError> {
    let iocb: *const u8 = ctx.arg(0);
    let file = kernel::kiocb_file(iocb)?;
    match kernel::classify_file::<Typed>(file)? {
        Some(tty) => {
            let from: *const u8 = ctx.arg(1);
            let bytes = kernel::iov_iter_count(from)?;
            let first = || kernel::iov_iter_user_bytes(from, bytes);
            activity::tty_written::<Typed, _, _, _>(ctx, ByHelper, &tty, bytes, first)
        }
        None => Ok(()),
    }
}

/// `long tty_ioctl(struct file *file, unsigned int cmd, unsigned long arg)`.
#[fentry(function = "tty_ioctl")]
pub fn fe_tty_ioctl(ctx: FEntryContext) -> u32 {
    bump(Probe::TtyResize, Stat::Seen);
    let _ = try_tty_ioctl(&ctx);
    0
}

fn try_tty_ioctl(ctx: &FEntryContext) -> Result<(), ReadError> {
    let cmd: u64 = ctx.arg(1);
    if cmd as u32 != TIOCSWINSZ {
        return Ok(());
    }
    let file: *const u8 = ctx.arg(0);
    match kernel::classify_file::<Typed>(file)? {
        Some(tty) => activity::tty_resized::<Typed, _, _>(ctx, ByHelper, &tty),
        None => Ok(()),
    }
}

/// The line discipline's receive path, `n_tty_receive_buf{,2}(tty, cp, fp, count)`:
/// keystrokes on a virtual or serial console arrive here, not through any write(2).
/// Pseudo-terminals pass through here too; they are counted at the master write.
///
/// The keyboard's and the serial port's bytes, and the console's answers, arrive from
/// a kernel worker (the flip buffer's), which has no controlling terminal. A process
/// that puts bytes into its own console's input (TIOCSTI, a selection paste through
/// TIOCLINUX) runs this itself: its controlling terminal is the console.
#[fentry(function = "n_tty_receive_buf")]
pub fn fe_rx_buf(ctx: FEntryContext) -> u32 {
    bump(Probe::ConsoleInput, Stat::Seen);
    let _ = try_receive(&ctx);
    0
}

#[fentry(function = "n_tty_receive_buf2")]
pub fn fe_rx_buf2(ctx: FEntryContext) -> u32 {
    bump(Probe::ConsoleInput, Stat::Seen);
    let _ = try_receive(&ctx);
    0
}

fn try_receive(ctx: &FEntryContext) -> Result<(), ReadError> {
    let tty: *const u8 = ctx.arg(0);
    if !kernel::tty_is_console(tty)? {
        return Ok(());
    }
    let count: u64 = ctx.arg(3);
    // An `int` before 6.6: only the low 32 bits of the register are defined.
    let count = count & 0xffff_ffff;
    let key = kernel::console_key::<Typed>(tty)?;
    let injected = kernel::current_ctty()? == tty;
    let cp: *const u8 = ctx.arg(1);
    let piece = KernelBuffer(cp as u64);
    activity::console_input(ctx, ByHelper, key, count, injected, piece);
    Ok(())
}

/// `void skb_consume_udp(struct sock *sk, struct sk_buff *skb, int len)`: called by
/// `udp_recvmsg` and `udpv6_recvmsg` once for every datagram they hand to the process,
/// with its length (negative when peeking). Not `udp_recvmsg` itself: every receive
/// attempt enters it, also those that find nothing and return EAGAIN, which would make
/// a process polling its socket look alive on the network, where the tracepoint backend
/// (and this hook) count only datagrams received. Only tracked processes (Mosh
/// servers) get past the first lookup.
#[fentry(function = "skb_consume_udp")]
pub fn fe_udp_consume(ctx: FEntryContext) -> u32 {
    bump(Probe::UdpRecv, Stat::Seen);
    let len: u64 = ctx.arg(2);
    // An `int`: only the low 32 bits of the register are defined.
    let len = len as u32 as i32;
    if len > 0 {
        activity::udp_received();
    }
    0
}

/// `ssize_t pipe_write(struct kiocb *iocb, struct iov_iter *from)` (`anon_pipe_write`
/// since Linux 6.14; the loader picks the name): every write into a pipe or FIFO.
/// Input of a login when a transport writes into a pipe its user made (the shell's
/// stdin of an `ssh -T` login, a command's, an sftp server's, where sshd uses
/// pipes). The transport test comes first (one load for a process that is none):
/// every pipe write on the host runs this.
#[fentry(function = "pipe_write")]
pub fn fe_pipe_write(ctx: FEntryContext) -> u32 {
    bump(Probe::PipeInput, Stat::Seen);
    let Some(login) = activity::transport_login(ByHelper) else {
        return 0;
    };
    let iocb: *const u8 = ctx.arg(0);
    let from: *const u8 = ctx.arg(1);
    let made_by_writer = kernel::kiocb_file(iocb)
        .and_then(kernel::file_inode::<Typed>)
        .and_then(kernel::pipe_made_by_current_user::<Typed>);
    if !matches!(made_by_writer, Ok(true)) {
        return 0;
    }
    if let Ok(bytes) = kernel::iov_iter_count(from) {
        activity::login_input(ByHelper, Probe::PipeInput, login, bytes);
    }
    0
}

/// `int unix_stream_sendmsg(struct socket *sock, struct msghdr *msg, size_t len)`:
/// every write or send into an AF_UNIX stream socket (a transport that talks to its
/// programs over socket pairs it made, as Linux builds of sshd do).
#[fentry(function = "unix_stream_sendmsg")]
pub fn fe_unix_stream_send(ctx: FEntryContext) -> u32 {
    unix_send(&ctx)
}

/// `int unix_dgram_sendmsg(struct socket *sock, struct msghdr *msg, size_t len)`:
/// AF_UNIX datagram and seqpacket sockets (`unix_seqpacket_sendmsg` calls it).
#[fentry(function = "unix_dgram_sendmsg")]
pub fn fe_unix_dgram_send(ctx: FEntryContext) -> u32 {
    unix_send(&ctx)
}

#[inline(always)]
fn unix_send(ctx: &FEntryContext) -> u32 {
    bump(Probe::PipeInput, Stat::Seen);
    let Some(login) = activity::transport_login(ByHelper) else {
        return 0;
    };
    let sock: *const u8 = ctx.arg(0);
    // The family test inside is always true here; the load it costs is the one
    // that finds the socket's `sock`.
    let made_by_writer = kernel::unix_socket_of_current::<Typed>(sock);
    if !matches!(made_by_writer, Ok(true)) {
        return 0;
    }
    let len: u64 = ctx.arg(2);
    activity::login_input(ByHelper, Probe::PipeInput, login, len);
    0
}
