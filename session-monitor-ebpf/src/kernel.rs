//! Reads of kernel structures at offsets the loader resolved from BTF.
//!
//! Rust eBPF gets no CO-RE relocations, so nothing here knows a structure layout:
//! every offset comes from `CONFIG.offsets`, a load-time constant. A member is read
//! one of two ways ([`Access`]): a direct load where the verifier knows the BTF type
//! of the base pointer (the current task, a hook's typed arguments, the structure
//! pointers loaded from those, and `void *` members typed again with
//! `bpf_rdonly_cast`), or `bpf_probe_read_kernel` where it only sees a number (on
//! kernels without that kfunc, and before 6.17 for the slots of an allocated
//! descriptor table).
//! Both fail cleanly instead of faulting; direct loads cost no helper call (about
//! 30 ns each), which matters on paths every write(2) on the host takes.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_probe_read_kernel, bpf_task_pt_regs,
    generated,
};
use session_monitor_common::{
    TtyClass, TtyKey,
    answers::ANSWER_PREFIX,
    counters::COUNTER_READ_ERRORS,
    dev::{self, S_IFCHR, S_IFIFO, S_IFMT, S_IFSOCK},
};

use crate::{activity::UserBytes, config::conf, kfunc, maps::bump_slot};

/// A kernel read failed: counted, and the event is ignored.
pub struct ReadError;

/// How the members of a structure are read.
pub trait Access {
    fn read<T: Copy>(base: *const u8, offset: u32) -> Result<T, ReadError>;

    /// `p`, read from a `void *` member, as a pointer to the kernel type `type_id`
    /// that this access can read. For [`Typed`] only where [`kfunc::casts`] holds.
    fn retype(p: *const u8, type_id: u32) -> *const u8;

    /// A pointer member that must not be null.
    #[inline(always)]
    fn read_ptr(base: *const u8, offset: u32) -> Result<*const u8, ReadError> {
        let p: *const u8 = Self::read(base, offset)?;
        if p.is_null() { Err(ReadError) } else { Ok(p) }
    }
}

/// Direct loads, for bases the verifier knows the BTF type of. It checks each offset
/// against the type (the offset is a constant from the read-only configuration, so it
/// knows the value) and makes the load one that cannot fault: a bad address reads as
/// zero. A base it does not know the type of fails verification, at load time.
pub struct Typed;

impl Access for Typed {
    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: u32) -> Result<T, ReadError> {
        if base.is_null() {
            return Err(ReadError);
        }
        // SAFETY: see above; the verifier rejects any access that is not a member of
        // the base's type.
        Ok(unsafe { core::ptr::read(base.wrapping_add(offset as usize) as *const T) })
    }

    #[inline(always)]
    fn retype(p: *const u8, type_id: u32) -> *const u8 {
        kfunc::rdonly_cast(p, type_id)
    }
}

/// `bpf_probe_read_kernel`, for pointers the verifier sees as plain numbers.
pub struct Untyped;

impl Access for Untyped {
    #[inline(always)]
    fn read<T: Copy>(base: *const u8, offset: u32) -> Result<T, ReadError> {
        if base.is_null() {
            return Err(ReadError);
        }
        // SAFETY: bpf_probe_read_kernel validates the address; a bad one returns an error.
        unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }.map_err(
            |_| {
                bump_slot(COUNTER_READ_ERRORS);
                ReadError
            },
        )
    }

    #[inline(always)]
    fn retype(p: *const u8, _type_id: u32) -> *const u8 {
        p
    }
}

/// The current task, as a pointer the verifier knows the type of.
#[inline(always)]
fn current_task() -> *const u8 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// The current task, fetched once for a program run (one helper call): what is
/// read from it afterwards (its descriptor table, its process id) is direct loads,
/// where each would otherwise be a helper call of its own.
#[derive(Clone, Copy)]
pub struct Task(*const u8);

impl Task {
    #[inline(always)]
    pub fn current() -> Self {
        Self(current_task())
    }

    /// The task's process id (its thread group's).
    #[inline(always)]
    pub fn tgid(self) -> Result<u32, ReadError> {
        let tgid: i32 = Typed::read(self.0, conf!(offsets.task_tgid))?;
        Ok(tgid as u32)
    }
}

/// Runs `$f::<A>(p, ...)` with `p` a structure that a `void *` member points to,
/// typed as `struct $ty` and `A` the way its members can be read: direct loads where
/// the kernel has `bpf_rdonly_cast` (the pointer typed again by the kfunc), helper
/// reads otherwise. The one place that choice is written. `$ty` names a field of
/// `KernelTypes`; the test is a load-time constant, so the verifier walks one side.
macro_rules! through_void {
    ($f:ident($p:expr => $ty:ident $(, $arg:expr)* $(,)?)) => {{
        let p: *const u8 = $p;
        if kfunc::casts() {
            $f::<Typed>(Typed::retype(p, conf!(types.$ty)) $(, $arg)*)
        } else {
            $f::<Untyped>(p $(, $arg)*)
        }
    }};
}

/// How many descriptors `files_struct.fd_array` holds (`NR_OPEN_DEFAULT`, the bits
/// of a long): a process that never had more open uses that array as its table.
const EMBEDDED_FDS: u32 = 64;

/// A file found in the current task's descriptor table, with the way its members can
/// be read.
pub enum CurrentFile {
    /// From the table embedded in `files_struct`: a typed `struct file *` (direct
    /// loads, no helper call).
    Typed(*const u8),
    /// From a table the kernel allocated when the process opened more than
    /// [`EMBEDDED_FDS`] descriptors: `struct file **`, which BTF does not type. The
    /// slot is a load where the kernel casts to untyped memory (6.17), a helper call
    /// before; the file is typed again where the kernel has `bpf_rdonly_cast`.
    Untyped(*const u8),
}

/// The `struct file` behind file descriptor `fd` of `task` (the current one). Every
/// write(2) on the host comes through here, so the common case takes no helper call
/// past the task: task → files → fdtable are direct loads, and while the table is the
/// one embedded in `files_struct` the slot is a member of a typed structure too.
#[inline(always)]
pub fn current_file(task: Task, fd: u32) -> Result<CurrentFile, ReadError> {
    let files = Typed::read_ptr(task.0, conf!(offsets.task_files))?;
    let fdt = Typed::read_ptr(files, conf!(offsets.files_fdt))?;
    let max_fds: u32 = Typed::read(fdt, conf!(offsets.fdtable_max_fds))?;
    if fd >= max_fds {
        return Err(ReadError);
    }
    let fd_array: *const u8 = Typed::read(fdt, conf!(offsets.fdtable_fd))?;
    let embedded = files.wrapping_add(conf!(offsets.files_fd_array) as usize);
    if fd < EMBEDDED_FDS && core::ptr::eq(fd_array, embedded) {
        return embedded_slot(files, fd).map(CurrentFile::Typed);
    }
    let file = if kfunc::casts_void() {
        // Untyped memory: a direct load at the slot's offset (which the verifier
        // does not track there), where the helper would be a call.
        Typed::read_ptr(kfunc::rdonly_cast(fd_array, 0), fd.wrapping_mul(8))?
    } else {
        Untyped::read_ptr(fd_array, fd.wrapping_mul(8))?
    };
    if kfunc::casts() {
        return Ok(CurrentFile::Typed(Typed::retype(file, conf!(types.file))));
    }
    Ok(CurrentFile::Untyped(file))
}

/// `files->fd_array[fd]` by a direct load. The verifier accepts a typed load only at
/// an offset it knows, not at one computed from `fd`: each descriptor gets its own
/// load at a constant offset, and the verifier walks only the branch taken.
#[inline(always)]
fn embedded_slot(files: *const u8, fd: u32) -> Result<*const u8, ReadError> {
    macro_rules! slots {
        ($($k:literal)*) => {
            match fd {
                $($k => slot::<$k>(files),)*
                _ => Err(ReadError),
            }
        };
    }
    slots!(
        0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
        32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
        61 62 63
    )
}

/// Slot `K` of `files->fd_array`. A volatile load, so that the compiler cannot fold
/// the slots back into one load at a computed offset.
#[inline(always)]
fn slot<const K: u32>(files: *const u8) -> Result<*const u8, ReadError> {
    let offset = conf!(offsets.files_fd_array).wrapping_add(K * 8);
    // SAFETY: a member of the typed `files_struct`; the verifier checks the offset.
    let file: *const u8 = unsafe {
        core::ptr::read_volatile(files.wrapping_add(offset as usize) as *const *const u8)
    };
    if file.is_null() {
        Err(ReadError)
    } else {
        Ok(file)
    }
}

/// A file that is a terminal: its class and its device number.
pub struct TtyFile {
    pub class: TtyClass,
    pub file: *const u8,
    pub inode: *const u8,
    pub rdev: u32,
}

/// What a written file is, as far as sessions are concerned.
pub enum FileKind {
    Tty(TtyFile),
    /// A pipe or FIFO, by its inode (see [`pipe_made_by_current_user`]).
    Pipe(*const u8),
    /// A socket of any family (see [`unix_socket_made_by_current`]).
    Socket,
    /// Anything else: regular files, /dev/null, other devices.
    Other,
}

/// Classifies a file by its inode: its type and, for character devices, the device
/// number. Reads nothing more than [`classify_file`]. `A` is how `file` (and so its
/// inode) can be read.
#[inline(always)]
pub fn file_kind<A: Access>(file: *const u8) -> Result<FileKind, ReadError> {
    let inode = file_inode::<A>(file)?;
    let mode: u16 = A::read(inode, conf!(offsets.inode_i_mode))?;
    match mode & S_IFMT {
        S_IFCHR => {}
        S_IFIFO => return Ok(FileKind::Pipe(inode)),
        S_IFSOCK => return Ok(FileKind::Socket),
        _ => return Ok(FileKind::Other),
    }
    let rdev: u32 = A::read(inode, conf!(offsets.inode_i_rdev))?;
    Ok(match dev::classify_rdev(rdev) {
        Some(class) => FileKind::Tty(TtyFile {
            class,
            file,
            inode,
            rdev,
        }),
        None => FileKind::Other,
    })
}

/// Classifies a file by its inode: character device and device number. Returns
/// `Ok(None)` for everything that is not a terminal (files, pipes, sockets, /dev/null).
/// `A` is how `file` (and so its inode) can be read.
#[inline(always)]
pub fn classify_file<A: Access>(file: *const u8) -> Result<Option<TtyFile>, ReadError> {
    match file_kind::<A>(file)? {
        FileKind::Tty(tty) => Ok(Some(tty)),
        _ => Ok(None),
    }
}

/// `AF_UNIX`.
const AF_UNIX: u16 = 1;

/// True when a socket file is an AF_UNIX socket that the current process made
/// (see [`sock_made_by_current`]): `file->private_data` is its `struct socket`,
/// whose `sk` gives the family and the maker.
#[inline(always)]
pub fn unix_socket_made_by_current<A: Access>(file: *const u8) -> Result<bool, ReadError> {
    let socket = A::read_ptr(file, conf!(offsets.file_private_data))?;
    through_void!(unix_socket_of_current(socket => socket))
}

/// True when `socket` (a `struct socket`, read with `A`) is an AF_UNIX socket that
/// the current process made.
#[inline(always)]
pub fn unix_socket_of_current<A: Access>(socket: *const u8) -> Result<bool, ReadError> {
    let sk = A::read_ptr(socket, conf!(offsets.socket_sk))?;
    let family: u16 = A::read(
        sk,
        conf!(offsets.sock_sk_common).wrapping_add(conf!(offsets.sock_common_skc_family)),
    )?;
    if family != AF_UNIX {
        return Ok(false);
    }
    sock_made_by_current::<A>(sk)
}

/// True when the current process made AF_UNIX socket `sk`: the pid a socket pair
/// records for both its ends is its maker's (`init_peercred`), where an accepted or
/// a connecting socket records the process at the other end. Exact: the socket
/// holds a reference on that `struct pid`, which no other process can get.
#[inline(always)]
fn sock_made_by_current<A: Access>(sk: *const u8) -> Result<bool, ReadError> {
    let maker: *const u8 = A::read(sk, conf!(offsets.sock_sk_peer_pid))?;
    Ok(!maker.is_null() && core::ptr::eq(maker, current_process_pid()?))
}

/// `enum pid_type` has four values before `PIDTYPE_MAX`.
const PID_TYPES: u32 = 4;

/// The current process's `struct pid` (its thread group's, whichever thread runs).
#[inline(always)]
fn current_process_pid() -> Result<*const u8, ReadError> {
    let tgid = conf!(offsets.pidtype_tgid);
    // Unknown on this kernel: nothing to compare with (and no load past the array).
    if tgid >= PID_TYPES {
        return Err(ReadError);
    }
    let signal = Typed::read_ptr(current_task(), conf!(offsets.task_signal))?;
    Typed::read_ptr(signal, conf!(offsets.signal_pids).wrapping_add(tgid * 8))
}

/// True when the current user made the pipe whose inode is `inode`: a pipe's inode
/// is owned by its maker's fsuid. A pipe has no record of the process that made it.
#[inline(always)]
pub fn pipe_made_by_current_user<A: Access>(inode: *const u8) -> Result<bool, ReadError> {
    let maker: u32 = A::read(inode, conf!(offsets.inode_i_uid))?;
    Ok(maker == bpf_get_current_uid_gid() as u32)
}

/// The inode of `file`, read with `A`.
#[inline(always)]
pub fn file_inode<A: Access>(file: *const u8) -> Result<*const u8, ReadError> {
    A::read_ptr(file, conf!(offsets.file_f_inode))
}

/// `sk->sk_protocol` of a hook's typed `sock`.
#[inline(always)]
pub fn sock_protocol(sk: *const u8) -> Result<u16, ReadError> {
    Typed::read(sk, conf!(offsets.sock_sk_protocol))
}

/// The thread id and thread-group id of a typed `task_struct` (a fork hook's child).
#[inline(always)]
pub fn task_ids(task: *const u8) -> Result<(u32, u32), ReadError> {
    let pid: i32 = Typed::read(task, conf!(offsets.task_pid))?;
    let tgid: i32 = Typed::read(task, conf!(offsets.task_tgid))?;
    Ok((pid as u32, tgid as u32))
}

/// True when the exiting current task is the last thread of its process: `do_exit`
/// decrements `signal->live` before the exit tracepoint. Not "the thread-group
/// leader exits": the leader may exit first (the process lives on in its other
/// threads), and when a thread calls execve the old leader exits and the process
/// lives on under the same tgid.
#[inline(always)]
pub fn current_process_dead() -> Result<bool, ReadError> {
    let signal = Typed::read_ptr(current_task(), conf!(offsets.task_signal))?;
    let live: i32 = Typed::read(signal, conf!(offsets.signal_live))?;
    Ok(live == 0)
}

/// The `tty_struct` of an open terminal file (`file->private_data->tty`), read with
/// `A` from its `tty_file_private` (a `void *` member: see [`through_void`]).
#[inline(always)]
fn file_tty<A: Access>(private: *const u8) -> Result<*const u8, ReadError> {
    A::read_ptr(private, conf!(offsets.tty_file_private_tty))
}

/// The key of the session terminal a pty master serves: its slave. A Unix98 pair
/// shares its index, and the slave's device number is the pts driver's major with
/// that index as minor; the master's `driver_data` is its devpts instance's
/// `pts_fs_info` (set by `ptmx_open`), whose superblock gives the instance. Four
/// reads after the tty, where going through the slave (`tty->link`, its driver,
/// its dentry) takes eight. Direct loads where the kernel has `bpf_rdonly_cast`,
/// helper reads otherwise.
#[inline(always)]
pub fn master_slave_key<A: Access>(master_file: *const u8) -> Result<TtyKey, ReadError> {
    let private_data = A::read_ptr(master_file, conf!(offsets.file_private_data))?;
    through_void!(slave_key_behind(private_data => tty_file_private))
}

#[inline(always)]
fn slave_key_behind<A: Access>(private: *const u8) -> Result<TtyKey, ReadError> {
    let master = file_tty::<A>(private)?;
    let index: i32 = A::read(master, conf!(offsets.tty_index))?;
    let fsi = A::read_ptr(master, conf!(offsets.tty_driver_data))?;
    let fsi = A::retype(fsi, conf!(types.pts_fs_info));
    let sb = A::read_ptr(fsi, conf!(offsets.pts_fs_info_sb))?;
    let pts_dev: u32 = A::read(sb, conf!(offsets.super_block_s_dev))?;
    Ok(TtyKey {
        rdev: dev::mkdev(dev::PTY_SLAVE_MAJOR_FIRST, index as u32),
        pts_dev,
    })
}

/// The key of a pty slave opened as a file: the device number is in the inode and the
/// devpts instance is the inode's superblock. Cheaper than going through the tty.
#[inline(always)]
pub fn slave_file_key<A: Access>(tty_file: &TtyFile) -> Result<TtyKey, ReadError> {
    let sb = A::read_ptr(tty_file.inode, conf!(offsets.inode_i_sb))?;
    let pts_dev: u32 = A::read(sb, conf!(offsets.super_block_s_dev))?;
    Ok(TtyKey {
        rdev: tty_file.rdev,
        pts_dev,
    })
}

/// The key of a console `tty_struct`: its device number from the driver. Consoles
/// live in no devpts instance.
#[inline(always)]
pub fn console_key<A: Access>(tty: *const u8) -> Result<TtyKey, ReadError> {
    let index: i32 = A::read(tty, conf!(offsets.tty_index))?;
    let driver = A::read_ptr(tty, conf!(offsets.tty_driver))?;
    let major: i32 = A::read(driver, conf!(offsets.tty_driver_major))?;
    let minor_start: i32 = A::read(driver, conf!(offsets.tty_driver_minor_start))?;
    Ok(TtyKey {
        rdev: dev::mkdev(
            major as u32,
            (minor_start as u32).wrapping_add(index as u32),
        ),
        pts_dev: 0,
    })
}

/// A console opened as a file: its key, and its input as n_tty keeps it (see
/// [`ConsoleInput`]). `/dev/console` redirects to the real console, so both come
/// from the tty, not from the inode.
#[inline(always)]
pub fn console_file_input<A: Access>(
    tty_file: &TtyFile,
) -> Result<(TtyKey, Option<ConsoleInput>), ReadError> {
    let private_data = A::read_ptr(tty_file.file, conf!(offsets.file_private_data))?;
    through_void!(console_input_behind(private_data => tty_file_private))
}

#[inline(always)]
fn console_input_behind<A: Access>(
    private: *const u8,
) -> Result<(TtyKey, Option<ConsoleInput>), ReadError> {
    let tty = file_tty::<A>(private)?;
    Ok((console_key::<A>(tty)?, console_input::<A>(tty)?))
}

/// `N_TTY`, the line discipline of terminals people type into.
const N_TTY: i32 = 0;

/// The size of n_tty's ring of input, `read_buf` (`N_TTY_BUF_SIZE`, 4096 on every
/// kernel); positions in it are counters taken modulo this.
const N_TTY_BUF_SIZE: u64 = 4096;

/// A console's input as its line discipline, n_tty, keeps it.
#[derive(Clone, Copy)]
pub struct ConsoleInput {
    /// How far n_tty has handed out its input: `read_tail`, which moves with every
    /// byte a read takes (and back to 0 on a flush) and with nothing else.
    pub taken: u64,
    /// n_tty's `struct n_tty_data`, a `void *` member: read through the helper, on a
    /// path only console reads and injections by console processes take.
    data: *const u8,
}

/// The console's input, `None` for a console on another line discipline (a modem's,
/// a multiplexer's), which nobody types into.
#[inline(always)]
fn console_input<A: Access>(tty: *const u8) -> Result<Option<ConsoleInput>, ReadError> {
    let ldisc = A::read_ptr(tty, conf!(offsets.tty_ldisc))?;
    let ops = A::read_ptr(ldisc, conf!(offsets.tty_ldisc_ops))?;
    let num: i32 = A::read(ops, conf!(offsets.tty_ldisc_ops_num))?;
    if num != N_TTY {
        return Ok(None);
    }
    let data = A::read_ptr(tty, conf!(offsets.tty_disc_data))?;
    let taken = Untyped::read(data, conf!(offsets.n_tty_read_tail))?;
    Ok(Some(ConsoleInput { taken, data }))
}

/// Room for the bytes of console input judged at once.
pub type Window = [u8; ANSWER_PREFIX];

/// A piece of console input in kernel memory, read a window at a time.
pub trait ConsoleBytes {
    /// Reads `len` bytes (at most [`ANSWER_PREFIX`]) from `offset` into the piece:
    /// into `head`, and where they wrap around the end of a ring, the rest into
    /// `tail`. How many each holds.
    fn window(
        &self,
        offset: u64,
        len: u64,
        head: &mut Window,
        tail: &mut Window,
    ) -> Result<(usize, usize), ReadError>;
}

/// Bytes in one kernel buffer (the receive hook's).
pub struct KernelBuffer(pub u64);

impl ConsoleBytes for KernelBuffer {
    #[inline(always)]
    fn window(
        &self,
        offset: u64,
        len: u64,
        head: &mut Window,
        _tail: &mut Window,
    ) -> Result<(usize, usize), ReadError> {
        Ok((read_kernel_bytes(head, self.0 + offset, len)?, 0))
    }
}

/// The last `len` bytes reads took from a console, those before
/// [`ConsoleInput::taken`], in n_tty's ring (`read_buf`): the kernel's copy, which
/// the reader cannot change after the fact as it can its own buffer.
pub struct TakenBytes {
    pub console: ConsoleInput,
    pub len: u64,
}

impl ConsoleBytes for TakenBytes {
    #[inline(always)]
    fn window(
        &self,
        offset: u64,
        len: u64,
        head: &mut Window,
        tail: &mut Window,
    ) -> Result<(usize, usize), ReadError> {
        let start = self
            .console
            .taken
            .wrapping_sub(self.len)
            .wrapping_add(offset);
        let start = start & (N_TTY_BUF_SIZE - 1);
        let head_len = len.min(N_TTY_BUF_SIZE - start);
        let ring = self.console.data as u64 + conf!(offsets.n_tty_read_buf) as u64;
        Ok((
            read_kernel_bytes(head, ring + start, head_len)?,
            read_kernel_bytes(tail, ring, len - head_len)?,
        ))
    }
}

/// Reads `len` bytes of kernel memory (at most [`ANSWER_PREFIX`]; none when 0) at
/// `addr` onto `buf` through the helper, which fails cleanly on a bad address. How
/// many it read.
#[inline(always)]
fn read_kernel_bytes(buf: &mut Window, addr: u64, len: u64) -> Result<usize, ReadError> {
    if len == 0 {
        return Ok(0);
    }
    // Masked where it is used: older verifiers (6.1) lose a bound the compiler proved
    // when the value is spilled to the stack and read back, and then refuse the read.
    // For `len` in 1..=64 this keeps it as it is.
    let len = ((len - 1) & (ANSWER_PREFIX as u64 - 1)) + 1;
    // SAFETY: the helper checks the address and fails on a bad one; it writes at most
    // `len` (<= 64) bytes into `buf`.
    let rc = unsafe {
        generated::bpf_probe_read_kernel(
            buf.as_mut_ptr().cast::<c_void>(),
            len as u32,
            addr as *const c_void,
        )
    };
    if rc != 0 {
        return Err(ReadError);
    }
    Ok(len as usize)
}

/// The first argument of the current task's system call, from the registers saved
/// at its entry: what a `sys_exit_*` record does not carry.
#[inline(always)]
pub fn current_syscall_arg0() -> Result<u64, ReadError> {
    // SAFETY: the helper takes the current task (a typed pointer) and returns its
    // typed `pt_regs`, whose members the verifier checks.
    let regs = unsafe { bpf_task_pt_regs(current_task() as *mut _) } as *const u8;
    Typed::read(regs, conf!(offsets.pt_regs_arg0))
}

/// True when `tty` is a console-class terminal. Both callers hold a typed `tty` (a
/// receive hook's argument, the task's controlling terminal).
#[inline(always)]
pub fn tty_is_console(tty: *const u8) -> Result<bool, ReadError> {
    let driver = Typed::read_ptr(tty, conf!(offsets.tty_driver))?;
    let major: i32 = Typed::read(driver, conf!(offsets.tty_driver_major))?;
    Ok(dev::is_console_major(major as u32))
}

/// `iocb->ki_filp` of a hook's typed `iocb`.
#[inline(always)]
pub fn kiocb_file(iocb: *const u8) -> Result<*const u8, ReadError> {
    Typed::read_ptr(iocb, conf!(offsets.kiocb_ki_filp))
}

/// `iter->count` of a hook's typed `iter`: bytes left to copy, i.e. the size of the
/// write.
#[inline(always)]
pub fn iov_iter_count(iter: *const u8) -> Result<u64, ReadError> {
    Typed::read(iter, conf!(offsets.iov_iter_count))
}

/// `struct iovec`, the same in user space and the kernel.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IoVec {
    pub base: u64,
    pub len: u64,
}

/// The first user buffer of a hook's typed `iter` of `count` bytes: `iter->ubuf` for
/// write(2) (`ITER_UBUF`), the first `iovec` for writev(2) (`ITER_IOVEC`, an array the
/// kernel copied in, read with one helper call). Any other kind (a kernel buffer, a
/// pipe) is an error: such a write is judged as input.
#[inline(always)]
pub fn iov_iter_user_bytes(iter: *const u8, count: u64) -> Result<UserBytes, ReadError> {
    let kind: u8 = Typed::read(iter, conf!(offsets.iov_iter_type))?;
    let kind = kind as u32;
    if kind == conf!(offsets.iter_ubuf) {
        let addr: u64 = Typed::read(iter, conf!(offsets.iov_iter_ubuf))?;
        return Ok(UserBytes {
            addr,
            len: count,
            total: count,
        });
    }
    if kind == conf!(offsets.iter_iovec) {
        let iov = Typed::read_ptr(iter, conf!(offsets.iov_iter_iov))?;
        let first: IoVec = Untyped::read(iov, 0)?;
        return Ok(UserBytes {
            addr: first.base,
            len: first.len,
            total: count,
        });
    }
    Err(ReadError)
}

/// The current task's controlling terminal (`current->signal->tty`), typed; null
/// when it has none, as daemons do.
#[inline(always)]
pub fn current_ctty() -> Result<*const u8, ReadError> {
    let signal = Typed::read_ptr(current_task(), conf!(offsets.task_signal))?;
    Typed::read(signal, conf!(offsets.signal_tty))
}
