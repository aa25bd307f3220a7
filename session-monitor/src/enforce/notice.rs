//! Lines written to a session's terminal: the warning before an end and the reason
//! at the end. They are written into the terminal's slave side — program output —
//! so they never count as input and cannot postpone the end they announce.

use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};

use rustix::{
    fs::{FileType, Mode, OFlags},
    process::{PidfdGetfdFlags, pidfd_getfd},
};
use session_monitor_common::TtyKey;

use crate::sessions::{Pinned, ProcRef, key_from_stat};

/// Why a line was not written.
#[derive(Debug)]
pub enum NoticeError {
    /// The session leader has exited: nobody to tell.
    Gone(&'static str),
    /// The daemon found no descriptor of the leader that is, when held, the
    /// session's terminal: nothing was written. A leader that passed its terminal
    /// away or swaps its descriptors does this; audited.
    Refused(String),
    /// The terminal itself failed the write (output stopped, hung up).
    Io(std::io::Error),
}

impl std::fmt::Display for NoticeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoticeError::Gone(why) => f.write_str(why),
            NoticeError::Refused(why) => write!(f, "refused: {why}"),
            NoticeError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for NoticeError {}

/// Writes `text` to the terminal `key` of the session led by `leader`, through the
/// terminal as the leader holds it (this also works inside containers, whose devpts
/// is not mounted in the daemon's view). Never blocks: a terminal whose output is
/// stopped (Ctrl-S) misses the line.
///
/// The leader is the user's own process and its descriptor table is hostile input:
/// a path like `/proc/LEADER/fd/0` may name the terminal when checked and a
/// read-only file of root's when opened (issue 16). So the daemon never opens a
/// path the user controls. It takes a copy of the leader's descriptor itself
/// (`pidfd_getfd`, through a pidfd checked against the leader's start time) and
/// checks *that* with `fstat`: a character device whose rdev is the terminal and,
/// for a pty, whose file system is the session's devpts instance. The copy shares
/// the user's open file description, so changing its flags (O_NONBLOCK) would
/// change the user's terminal; the daemon instead opens its own description of
/// the same file through `/proc/self/fd/N` — its own descriptor, which nobody
/// else can change — non-blocking, checks it again and writes once.
///
/// A pty key is always the *slave* (`key_from_stat` gives a devpts instance only
/// to slave majors; a master is `/dev/ptmx`, 5:2): the line is terminal output,
/// never input, and cannot postpone the end it announces.
pub fn write_to_terminal(leader: &Pinned, key: TtyKey, text: &str) -> Result<(), NoticeError> {
    let held = leaders_descriptor(leader, key)?;
    let own = rustix::fs::open(
        format!("/proc/self/fd/{}", held.as_raw_fd()),
        OFlags::WRONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|err| NoticeError::Io(err.into()))?;
    drop(held);
    check_is_terminal(&own, key).map_err(NoticeError::Refused)?;
    let written =
        rustix::io::write(&own, text.as_bytes()).map_err(|e| NoticeError::Io(e.into()))?;
    if written < text.len() {
        return Err(NoticeError::Io(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("the terminal took {written} of {} bytes", text.len()),
        )));
    }
    Ok(())
}

/// What writing one line to a login's terminals did (see [`write_to_terminals`]).
#[derive(Default)]
pub struct Delivery {
    /// The line reached at least one terminal.
    pub written: bool,
    /// Terminals that refused it, and why: audited, as that may be a user's doing.
    pub refused: Vec<(TtyKey, String)>,
    /// Terminals where it failed for another reason (the leader gone, the terminal
    /// hung up or stopped): only logged, at the caller's level.
    pub failed: Vec<(TtyKey, NoticeError)>,
}

/// Writes `text` to each of `terminals` (a leader and its terminal) with
/// [`write_to_terminal`]. Each leader is pinned once, and stays in `pinned` for the
/// caller (an end signals the leaders it wrote through); leaders already there are
/// used as they are.
pub fn write_to_terminals(
    terminals: &[(ProcRef, TtyKey)],
    text: &str,
    pinned: &mut Vec<Pinned>,
) -> Delivery {
    let mut delivery = Delivery::default();
    for &(leader, tty) in terminals {
        let held = match pinned.iter().position(|p| p.process == leader) {
            Some(i) => Ok(&pinned[i]),
            None => pin_leader(leader).map(|held| {
                pinned.push(held);
                &pinned[pinned.len() - 1]
            }),
        };
        match held.and_then(|leader| write_to_terminal(leader, tty, text)) {
            Ok(()) => delivery.written = true,
            Err(NoticeError::Refused(why)) => delivery.refused.push((tty, why)),
            Err(err) => delivery.failed.push((tty, err)),
        }
    }
    delivery
}

/// The leader held for [`write_to_terminal`] (see [`ProcRef::pin`]).
pub fn pin_leader(leader: ProcRef) -> Result<Pinned, NoticeError> {
    leader
        .pin()
        .ok_or(NoticeError::Gone("the session leader has exited"))
}

/// A copy of the leader's descriptor of terminal `key`, checked with `fstat`. The
/// leader is held by a pidfd checked to be it, so the copies are its descriptors.
fn leaders_descriptor(leader: &Pinned, key: TtyKey) -> Result<OwnedFd, NoticeError> {
    for fd in crate::sessions::fd_numbers(leader.process.pid) {
        // The descriptor may be closed or replaced at any moment: whatever we got
        // is ours now, cannot change, and is what we check.
        let Ok(copy) = pidfd_getfd(&leader.fd, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        if check_is_terminal(&copy, key).is_ok() {
            return Ok(copy);
        }
    }
    Err(NoticeError::Refused(
        "the session leader holds no descriptor of its terminal".to_string(),
    ))
}

/// Checks the open file (not a path): a character device that is terminal `key`
/// (rdev, and for a pty the devpts instance it lives in).
fn check_is_terminal(fd: impl AsFd, key: TtyKey) -> Result<(), String> {
    let st = rustix::fs::fstat(fd).map_err(|e| format!("fstat: {e}"))?;
    let file_type = FileType::from_raw_mode(st.st_mode);
    if file_type != FileType::CharacterDevice {
        return Err(format!("not a character device but {file_type:?}"));
    }
    let found = key_from_stat(st.st_rdev, st.st_dev);
    if found != key {
        return Err(format!(
            "device {}:{} in file system {:#x}, not the session's terminal",
            libc::major(st.st_rdev),
            libc::minor(st.st_rdev),
            st.st_dev
        ));
    }
    Ok(())
}

/// `1 minute`, `30 seconds`.
fn spoken(secs: u64) -> String {
    let unit = |n: u64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match secs {
        s if s >= 3600 && s % 3600 == 0 => unit(s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => unit(s / 60, "minute"),
        s => unit(s, "second"),
    }
}

/// The warning: what will happen, when, why, and how to prevent it.
pub fn warning_text(reason: super::EndReason, in_secs: u64, limit_secs: u64) -> String {
    let body = match reason {
        super::EndReason::Lifetime => format!(
            "this session will be closed in {}: it reached the maximum session length of {}.",
            spoken(in_secs),
            spoken(limit_secs)
        ),
        _ => format!(
            "this session will be closed for inactivity in {} unless there is input (idle limit {}).",
            spoken(in_secs),
            spoken(limit_secs)
        ),
    };
    format!("\r\n\x07*** session-monitor: {body} ***\r\n")
}

/// The last line before the end.
pub fn closing_text(reason: super::EndReason, detail: &str) -> String {
    let why = match reason {
        super::EndReason::Idle => format!("no input for {detail}"),
        super::EndReason::Lifetime => format!("maximum session length of {detail} reached"),
        super::EndReason::Network => format!("no contact with the client for {detail}"),
        super::EndReason::Revoked => format!("access was revoked ({})", printable(detail)),
        super::EndReason::Logout => "logout".to_string(),
    };
    format!("\r\n*** session-monitor: closing this session: {why}. ***\r\n")
}

/// `text` without control characters and bidirectional overrides: a revocation's
/// reason comes from a control-socket client (root or the policy's
/// `control_group`), and must not carry escape sequences into users' terminals.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
            if c.is_control() || bidi { '?' } else { c }
        })
        .collect()
}

pub fn spoken_duration(secs: u64) -> String {
    spoken(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::EndReason;

    #[test]
    fn warning_reads_well() {
        assert_eq!(
            warning_text(EndReason::Idle, 60, 900),
            "\r\n\x07*** session-monitor: this session will be closed for inactivity in 1 minute unless there is input (idle limit 15 minutes). ***\r\n"
        );
        assert!(
            warning_text(EndReason::Lifetime, 2, 3600).contains("maximum session length of 1 hour")
        );
        assert!(closing_text(EndReason::Idle, "3 seconds").contains("no input for 3 seconds"));
    }

    #[test]
    fn a_revocation_reason_carries_no_escape_sequences() {
        let line = closing_text(
            EndReason::Revoked,
            "left\x1b]52;c;cm0gLXJmIH4=\x07 \u{202e}moc",
        );
        assert_eq!(
            line,
            "\r\n*** session-monitor: closing this session: access was revoked (left?]52;c;cm0gLXJmIH4=? ?moc). ***\r\n"
        );
    }
}
