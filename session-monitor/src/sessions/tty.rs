//! Terminal keys and names as user space sees them.

use std::{fs, path::Path};

use session_monitor_common::{
    TtyKey,
    dev::{self, mkdev},
};

/// The key of a terminal from `stat()`: `st_rdev` of the device and `st_dev` of the
/// file system it lives on (the devpts instance for a pty slave).
pub fn key_from_stat(st_rdev: u64, st_dev: u64) -> TtyKey {
    let rdev = mkdev(libc::major(st_rdev), libc::minor(st_rdev));
    let is_pty =
        (dev::PTY_SLAVE_MAJOR_FIRST..=dev::PTY_SLAVE_MAJOR_LAST).contains(&libc::major(st_rdev));
    let pts_dev = if is_pty {
        mkdev(libc::major(st_dev), libc::minor(st_dev))
    } else {
        0
    };
    TtyKey { rdev, pts_dev }
}

/// `pts/3`, `tty1`, `ttyS0`: what `ps` and `w` call the terminal.
pub fn tty_name(key: &TtyKey) -> String {
    let (major, minor) = (dev::major(key.rdev), dev::minor(key.rdev));
    if key.is_pty() {
        let index = (major - dev::PTY_SLAVE_MAJOR_FIRST) * 256 + minor;
        return format!("pts/{index}");
    }
    // The kernel names character devices in sysfs: /sys/dev/char/4:64 -> .../ttyS0.
    let link = format!("/sys/dev/char/{major}:{minor}");
    fs::read_link(&link)
        .ok()
        .and_then(|target| {
            Path::new(&target)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| format!("char/{major}:{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_keys_carry_the_devpts_instance() {
        let key = key_from_stat(libc::makedev(136, 3), libc::makedev(0, 25));
        assert_eq!(
            key,
            TtyKey {
                rdev: mkdev(136, 3),
                pts_dev: 25
            }
        );
        assert_eq!(tty_name(&key), "pts/3");
    }

    #[test]
    fn console_keys_have_no_instance() {
        let key = key_from_stat(libc::makedev(4, 1), libc::makedev(0, 6));
        assert_eq!(
            key,
            TtyKey {
                rdev: mkdev(4, 1),
                pts_dev: 0
            }
        );
    }
}
