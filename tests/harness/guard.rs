//! Root check and the lock that keeps integration tests from running concurrently:
//! they measure idle time on a two-core machine and share the kernel's tracepoints.

use std::{fs::File, os::fd::AsRawFd as _, sync::Once};

use crate::cleanup;

const LOCK_PATH: &str = "/tmp/session-monitor-tests.lock";

/// Held by a running test; other tests (threads or processes) wait for it.
#[must_use = "the lock is released when the guard is dropped"]
pub struct TestGuard {
    _lock: File,
}

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The function behind [`crate::test_guard!`]: the lock, held until dropped. A test
/// that cannot run here fails (it never passes without having run): the integration
/// tests need root to load eBPF, create users and start sshd. The first call in a
/// process also removes what killed test runs left behind (users, processes,
/// temporary directories).
pub fn test_guard() -> TestGuard {
    let name = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    assert!(
        is_root(),
        "{name} needs root (to load eBPF, create users and start sshd); run `cargo xtask test` as root"
    );
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .unwrap_or_else(|e| panic!("cannot open the test lock {LOCK_PATH}: {e}"));
    // SAFETY: flock on a descriptor we own. The lock belongs to this open file
    // description, so it also excludes other threads of this process.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        rc,
        0,
        "flock {LOCK_PATH}: {}",
        std::io::Error::last_os_error()
    );
    static DETACH: Once = Once::new();
    DETACH.call_once(detach_from_login);
    static SWEEP: Once = Once::new();
    SWEEP.call_once(cleanup::sweep_stale);
    TestGuard { _lock: lock }
}

/// Takes the test process out of any login's audit session. Run from an ssh login,
/// it would otherwise share that login's audit session, and the daemon would rightly
/// take the tests' tmux terminals for terminals nested in the developer's login.
/// Writing -1 to /proc/self/loginuid unsets loginuid and session id (root may, unless
/// the kernel made loginuid immutable; then nothing changes).
fn detach_from_login() {
    let _ = std::fs::write("/proc/self/loginuid", "4294967295");
}
