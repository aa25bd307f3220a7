//! Test harness for session-monitor: real daemons, users, sshd, tmux and mosh, each
//! cleaned up when dropped, also when a test panics.
//!
//! Every test starts with [`test_guard!`], which fails the test when not root (a test
//! that cannot run never passes) and otherwise holds a machine-wide lock, so that tests never run at the
//! same time even without `--test-threads=1`. Then it builds what it needs, users
//! first and clients last, so that they are dropped in the reverse order (clients
//! first, users last):
//!
//! ```no_run
//! use std::time::Duration;
//! use harness::{Daemon, Kind, Sshd, TestUser, Tmux, test_guard};
//!
//! let _guard = test_guard!();
//! let user = TestUser::new();
//! let sshd = Sshd::start();
//! sshd.authorize(&user);
//! let daemon = Daemon::start();
//! let tmux = Tmux::new();
//! let pane = tmux.new_session("ssh", &sshd.ssh_command(&user));
//! let session = daemon.wait_for_session("the ssh session", Duration::from_secs(20), |s| {
//!     s.user == user.name() && s.kind == Kind::Ssh
//! });
//! pane.type_line("exit");
//! daemon.wait_session_gone(&session.id, Duration::from_secs(15));
//! ```
//!
//! The daemon under test is `$SESSION_MONITOR_BIN` (`cargo xtask test` sets it), or
//! `target/debug/session-monitor` of this workspace. Each [`Daemon`] gets its own
//! control socket, log, policy file, audit log and state directory in a temporary
//! directory, so tests never touch the machine's. `$SESSION_MONITOR_BACKEND`
//! (`fentry` or `tracepoint`), when set, is passed as `--backend` to every daemon
//! whose test does not choose one (`cargo xtask vm-test` runs the suite once per backend).

mod cleanup;
mod containers;
mod daemon;
mod daemonset;
mod guard;
pub mod http;
mod mosh;
mod pins;
pub mod process;
mod prometheus;
mod sshd;
mod tempdir;
mod tmux;
mod user;
mod wait;

pub use containers::{BASE_IMAGE, Container, DAEMON_IMAGE, Docker, Podman};
pub use daemon::{
    Daemon, DaemonBuilder, Kind, Session, UNLIMITED_POLICY, daemon_binary, describe, forced_backend,
};
pub use daemonset::{DaemonSetPod, Mount};
pub use guard::{TestGuard, is_root, test_guard};
pub use mosh::Mosh;
pub use pins::PinDir;
pub use prometheus::Prometheus;
pub use sshd::Sshd;
pub use tempdir::TempDir;
pub use tmux::{Pane, Tmux};
pub use user::{TestGroup, TestUser};
pub use wait::{Wait, wait_until, wait_until_ok};

/// Fails the test unless running as root; otherwise evaluates to a [`TestGuard`]
/// that keeps other tests out until dropped.
///
/// ```no_run
/// let _guard = harness::test_guard!();
/// ```
#[macro_export]
macro_rules! test_guard {
    () => {
        $crate::test_guard()
    };
}

/// Quotes a word for `sh`.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Joins words into one `sh` command line.
pub fn shell_join<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> String {
    words
        .into_iter()
        .map(|w| shell_quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("ssh"), "ssh");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_join(["ssh", "-o", "A=b c"]), "ssh -o 'A=b c'");
    }
}
