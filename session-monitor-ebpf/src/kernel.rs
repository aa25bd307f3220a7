//! Reads of kernel structures at offsets the loader resolved from BTF.
//!
//! Rust eBPF gets no CO-RE relocations, so nothing here knows a structure layout:
//! every offset comes from `CONFIG.offsets`. All reads go through
//! `bpf_probe_read_kernel`, which fails cleanly instead of faulting.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use session_monitor_common::{
    TtyClass, TtyKey,
    counters::COUNTER_READ_ERRORS,
    dev::{self, S_IFCHR, S_IFMT},
};

use crate::{config::conf, maps::bump_slot};

/// A kernel read failed: counted, and the event is ignored.
pub struct ReadError;

#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Result<T, ReadError> {
    if base.is_null() {
        return Err(ReadError);
    }
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }.map_err(|_| {
        bump_slot(COUNTER_READ_ERRORS);
        ReadError
    })
}

#[inline(always)]
fn read_ptr(base: *const u8, offset: u32) -> Result<*const u8, ReadError> {
    let p: *const u8 = read(base, offset)?;
    if p.is_null() { Err(ReadError) } else { Ok(p) }
}

/// The `struct file` behind file descriptor `fd` of the current task.
#[inline(always)]
pub fn current_file(fd: u32) -> Result<*const u8, ReadError> {
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files = read_ptr(task, conf!(offsets.task_files))?;
    let fdt = read_ptr(files, conf!(offsets.files_fdt))?;
    let max_fds: u32 = read(fdt, conf!(offsets.fdtable_max_fds))?;
    if fd >= max_fds {
        return Err(ReadError);
    }
    let fd_array = read_ptr(fdt, conf!(offsets.fdtable_fd))?;
    read_ptr(fd_array, fd.wrapping_mul(8))
}

/// A file that is a terminal: its class and its device number.
pub struct TtyFile {
    pub class: TtyClass,
    pub file: *const u8,
    pub inode: *const u8,
    pub rdev: u32,
}

/// Classifies a file by its inode: character device and device number. Returns
/// `Ok(None)` for everything that is not a terminal (files, pipes, sockets, /dev/null).
#[inline(always)]
pub fn classify_file(file: *const u8) -> Result<Option<TtyFile>, ReadError> {
    let inode = read_ptr(file, conf!(offsets.file_f_inode))?;
    let mode: u16 = read(inode, conf!(offsets.inode_i_mode))?;
    if mode & S_IFMT != S_IFCHR {
        return Ok(None);
    }
    let rdev: u32 = read(inode, conf!(offsets.inode_i_rdev))?;
    Ok(dev::classify_rdev(rdev).map(|class| TtyFile {
        class,
        file,
        inode,
        rdev,
    }))
}

/// The `tty_struct` of an open terminal file (`file->private_data->tty`).
#[inline(always)]
pub fn file_tty(file: *const u8) -> Result<*const u8, ReadError> {
    let priv_data = read_ptr(file, conf!(offsets.file_private_data))?;
    read_ptr(priv_data, conf!(offsets.tty_file_private_tty))
}

/// The key of a `tty_struct`: its device number from the driver, and for a pty slave
/// the devpts instance it lives in (`tty->driver_data` is its `/dev/pts/N` dentry).
#[inline(always)]
pub fn tty_key(tty: *const u8) -> Result<TtyKey, ReadError> {
    let index: i32 = read(tty, conf!(offsets.tty_index))?;
    let driver = read_ptr(tty, conf!(offsets.tty_driver))?;
    let major: i32 = read(driver, conf!(offsets.tty_driver_major))?;
    let minor_start: i32 = read(driver, conf!(offsets.tty_driver_minor_start))?;
    let rdev = dev::mkdev(
        major as u32,
        (minor_start as u32).wrapping_add(index as u32),
    );
    let maj = major as u32;
    let pts_dev = if (dev::PTY_SLAVE_MAJOR_FIRST..=dev::PTY_SLAVE_MAJOR_LAST).contains(&maj) {
        let dentry = read_ptr(tty, conf!(offsets.tty_driver_data))?;
        let sb = read_ptr(dentry, conf!(offsets.dentry_d_sb))?;
        read::<u32>(sb, conf!(offsets.super_block_s_dev))?
    } else {
        0
    };
    Ok(TtyKey { rdev, pts_dev })
}

/// The key of the session terminal a pty master serves: its slave.
#[inline(always)]
pub fn master_slave_key(master_file: *const u8) -> Result<TtyKey, ReadError> {
    let master = file_tty(master_file)?;
    let slave = read_ptr(master, conf!(offsets.tty_link))?;
    tty_key(slave)
}

/// The key of a pty slave opened as a file: the device number is in the inode and the
/// devpts instance is the inode's superblock. Cheaper than going through the tty.
#[inline(always)]
pub fn slave_file_key(tty_file: &TtyFile) -> Result<TtyKey, ReadError> {
    let sb = read_ptr(tty_file.inode, conf!(offsets.inode_i_sb))?;
    let pts_dev: u32 = read(sb, conf!(offsets.super_block_s_dev))?;
    Ok(TtyKey {
        rdev: tty_file.rdev,
        pts_dev,
    })
}

/// The key of a console opened as a file. `/dev/console` redirects to the real
/// console, so the key comes from the tty, not from the inode.
#[inline(always)]
pub fn console_file_key(tty_file: &TtyFile) -> Result<TtyKey, ReadError> {
    tty_key(file_tty(tty_file.file)?)
}

/// True when `tty` is a console-class terminal (for the receive-path probes).
#[inline(always)]
pub fn tty_is_console(tty: *const u8) -> Result<bool, ReadError> {
    let driver = read_ptr(tty, conf!(offsets.tty_driver))?;
    let major: i32 = read(driver, conf!(offsets.tty_driver_major))?;
    Ok(dev::is_console_major(major as u32))
}

/// `iocb->ki_filp`.
#[inline(always)]
pub fn kiocb_file(iocb: *const u8) -> Result<*const u8, ReadError> {
    read_ptr(iocb, conf!(offsets.kiocb_ki_filp))
}

/// `iter->count`: bytes left to copy, i.e. the size of the write.
#[inline(always)]
pub fn iov_iter_count(iter: *const u8) -> Result<u64, ReadError> {
    read(iter, conf!(offsets.iov_iter_count))
}

/// The current task's controlling terminal (`current->signal->tty`); null when it has
/// none, as daemons do.
#[inline(always)]
pub fn current_ctty() -> Result<*const u8, ReadError> {
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let signal = read_ptr(task, conf!(offsets.task_signal))?;
    read(signal, conf!(offsets.signal_tty))
}
