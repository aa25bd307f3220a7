//! Lines written to a session's terminal: the warning before an end and the reason
//! at the end. They are written into the terminal's slave side — program output —
//! so they never count as input and cannot postpone the end they announce.

use std::{fs::OpenOptions, io::Write as _, os::unix::fs::OpenOptionsExt as _};

use session_monitor_common::TtyKey;

/// Writes `text` to the terminal `key`, reached through a descriptor the session
/// leader holds (this also works inside containers, whose devpts is not ours).
/// Never blocks: a terminal whose output is stopped (Ctrl-S) misses the line.
pub fn write_to_terminal(leader: u32, key: TtyKey, text: &str) -> std::io::Result<()> {
    let path = crate::sessions::tty_fd_path(leader, key).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the session leader has no descriptor of its terminal",
        )
    })?;
    let mut tty = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    tty.write_all(text.as_bytes())
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
        super::EndReason::Revoked => format!("access was revoked ({detail})"),
        super::EndReason::Logout => "logout".to_string(),
    };
    format!("\r\n*** session-monitor: closing this session: {why}. ***\r\n")
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
}
