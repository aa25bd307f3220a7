//! Human-readable output of the CLI.

use std::fmt::Write as _;

use crate::{
    control::{Lifted, Revoked},
    daemon::{Explanation, Status},
    revoke::Revocation,
    sessions::SessionView,
};

/// A reply of the daemon as the CLI shows it without `--json`.
pub trait Text {
    fn text(&self) -> String;
}

impl Text for Vec<SessionView> {
    fn text(&self) -> String {
        sessions_table(self)
    }
}

impl Text for Status {
    fn text(&self) -> String {
        status_text(self)
    }
}

impl Text for Explanation {
    fn text(&self) -> String {
        explanation_text(self)
    }
}

impl Text for Vec<Revocation> {
    fn text(&self) -> String {
        revocations_table(self)
    }
}

impl Text for Revoked {
    fn text(&self) -> String {
        format!(
            "revoked; {} live session(s) being ended\n",
            self.sessions_ended.len()
        )
    }
}

impl Text for Lifted {
    fn text(&self) -> String {
        "revocation lifted\n".to_string()
    }
}

/// `3.2s`, `4m05s`, `2h13m`, `3d04h`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let s = s as u64;
    match s {
        0..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

pub fn sessions_table(sessions: &[SessionView]) -> String {
    let header = [
        "ID", "TTY", "KIND", "USER", "IDLE", "NET-IDLE", "STARTED", "LEADER", "SERVER", "REMOTE",
    ];
    let rows: Vec<[String; 10]> = sessions
        .iter()
        .map(|s| {
            [
                s.id.clone(),
                terminals_text(s),
                s.kind.to_string(),
                s.user.clone(),
                human_duration(s.idle_seconds),
                s.network_idle_seconds.map_or("-".into(), human_duration),
                s.started_at
                    .get(..19)
                    .unwrap_or(&s.started_at)
                    .replace('T', " "),
                s.leader_pid.to_string(),
                match (&s.server, s.server_pid) {
                    (Some(name), Some(pid)) => format!("{name}[{pid}]"),
                    (None, Some(pid)) => pid.to_string(),
                    _ => "-".into(),
                },
                s.remote.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

pub fn status_text(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "session-monitor {} (pid {}), kernel {}",
        status.version, status.pid, status.kernel
    );
    let _ = writeln!(out, "backend:      {}", status.backend);
    if let Some(reason) = &status.fallback_reason {
        let _ = writeln!(out, "              (fentry unavailable: {reason})");
    }
    if let Some(udp) = &status.udp_source {
        let _ = writeln!(out, "udp source:   {udp}");
    }
    let _ = writeln!(
        out,
        "revocation:   {}",
        if status.kernel_revocation {
            "in the kernel (bpf_send_signal) and by the daemon"
        } else {
            "by the daemon only"
        }
    );
    match &status.kernel_state {
        Some(k) => {
            let _ = writeln!(
                out,
                "kernel state: {} ({}; programs {} a crash)",
                k.dir,
                k.found,
                if k.links_pinned {
                    "survive"
                } else {
                    "end with"
                }
            );
        }
        None => {
            let _ = writeln!(
                out,
                "kernel state: not pinned (--pin-dir ''): a restart loses input times"
            );
        }
    }
    let _ = writeln!(
        out,
        "sessions:     {} ({} terminals without a login session)",
        status.sessions, status.unresolved_terminals
    );
    let _ = writeln!(
        out,
        "events:       {} received, {} dropped by a full ring buffer",
        status.events_received, status.ring_buffer_drops
    );
    let _ = writeln!(out, "programs:");
    for p in &status.programs {
        let _ = writeln!(out, "  {:<14} {:<48} {}", p.name, p.attach, p.probe);
    }
    for s in &status.standby_programs {
        let p = &s.program;
        let now = if s.attached { "attached" } else { "detached" };
        let _ = writeln!(
            out,
            "  {:<14} {:<48} {} (on standby, attached {}: {now})",
            p.name, p.attach, p.probe, s.attached_while
        );
    }
    for p in &status.skipped_programs {
        let _ = writeln!(out, "  skipped: {p}");
    }
    let _ = writeln!(out, "counters (seen / matched / sent / dropped):");
    if let Some(probes) = status.counters.get("probes").and_then(|p| p.as_array()) {
        for p in probes {
            let get = |k: &str| p.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            let _ = writeln!(
                out,
                "  {:<14} {} / {} / {} / {}",
                p.get("probe").and_then(|v| v.as_str()).unwrap_or("?"),
                get("seen"),
                get("matched"),
                get("sent"),
                get("dropped")
            );
        }
    }
    let counter = |k: &str| status.counters.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let _ = writeln!(
        out,
        "answers:      {} terminal answers not counted as input",
        counter("answers_ignored")
    );
    let _ = writeln!(
        out,
        "injections:   {} console inputs its own session put there, not counted",
        counter("injections_ignored")
    );
    let _ = writeln!(
        out,
        "kernel map inserts failed: {} processes of logins, {} logins (should stay 0)",
        counter("procs_insert_failures"),
        counter("login_insert_failures")
    );
    out
}

pub fn revocations_table(list: &[Revocation]) -> String {
    if list.is_empty() {
        return "no revocations in force\n".to_string();
    }
    let when = |secs: u64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        crate::clock::rfc3339(t).replace('T', " ")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<8} {:<21} {:<21} REASON",
        "WHO", "SOURCE", "SINCE", "UNTIL"
    );
    for r in list {
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:<21} {:<21} {}",
            r.target.to_string(),
            format!("{:?}", r.source).to_lowercase(),
            when(r.since),
            r.until.map_or_else(|| "lifted by hand".to_string(), when),
            r.reason.as_deref().unwrap_or("-")
        );
    }
    out
}

/// A login's terminals (`pts/3,pts/4`), or what it carries for one without
/// (`-(subsystem)`).
fn terminals_text(s: &SessionView) -> String {
    if !s.terminals.is_empty() {
        return s.terminals.join(",");
    }
    let carries: Vec<String> = s
        .carries
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .collect();
    format!("-({})", carries.join(","))
}

pub fn explanation_text(e: &Explanation) -> String {
    let mut out = String::new();
    let s = &e.session;
    let _ = writeln!(
        out,
        "session {} on {} ({}), user {} (uid {})",
        s.id,
        terminals_text(s),
        s.kind,
        s.user,
        s.uid
    );
    let _ = writeln!(out, "groups:        {}", e.groups.join(", "));
    let _ = writeln!(out, "rule:          {}", e.rule);
    if e.matched_rules.len() > 1 {
        let _ = writeln!(out, "also matched:  {}", e.matched_rules[1..].join(", "));
    }
    let get = |k: &str| {
        e.limits
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let _ = writeln!(
        out,
        "limits:        idle {}, session {}, network {}, warning {} before{}",
        get("idle_timeout"),
        get("max_session"),
        get("network_timeout"),
        get("warn_before"),
        if e.limits.get("exempt").and_then(|v| v.as_bool()) == Some(true) {
            ", EXEMPT"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "mode:          {}",
        match e.mode {
            crate::policy::Mode::Enforce => "enforce",
            crate::policy::Mode::DryRun => "dry-run",
        }
    );
    let _ = writeln!(out, "idle:          {}", human_duration(s.idle_seconds));
    match (e.next.as_str(), &e.reason) {
        ("none", _) => {
            let _ = writeln!(out, "next:          nothing: no limit applies");
        }
        (_, reason) => {
            let reason = reason.as_deref().unwrap_or("?");
            if let Some(w) = &e.warn_at {
                let _ = writeln!(out, "warning at:    {w}");
            }
            if let Some(end) = &e.end_at {
                let _ = writeln!(
                    out,
                    "end at:        {end} (in {}, reason: {reason})",
                    human_duration(e.end_in_seconds.unwrap_or(0.0))
                );
            }
        }
    }
    if e.warned {
        let _ = writeln!(out, "warned:        yes");
    }
    if e.ending {
        let _ = writeln!(out, "state:         being ended now");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_w() {
        assert_eq!(human_duration(3.24), "3.2s");
        assert_eq!(human_duration(245.0), "4m05s");
        assert_eq!(human_duration(7980.0), "2h13m");
        assert_eq!(human_duration(273600.0), "3d04h");
    }
}
