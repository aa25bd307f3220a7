//! Answers to control requests.

use serde::{Deserialize, Serialize};

use super::{
    core::Core,
    status::{ProgramStatus, StandbyStatus, Status},
};
use crate::{
    clock,
    control::{Caller, Request, Response},
    enforce::Next,
    policy::{Limits, Mode},
    sessions::SessionView,
};

/// `session-monitor explain`: which rule applies and what happens next.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Explanation {
    pub session: SessionView,
    pub groups: Vec<String>,
    pub rule: String,
    pub matched_rules: Vec<String>,
    pub limits: serde_json::Value,
    pub mode: Mode,
    /// The next step: `warn`, `end` or `none`.
    pub next: String,
    pub reason: Option<String>,
    pub warn_at: Option<String>,
    pub end_at: Option<String>,
    pub end_in_seconds: Option<f64>,
    pub warned: bool,
    pub ending: bool,
}

impl Core {
    pub(super) fn handle(&mut self, request: Request, caller: Caller) -> Response {
        match request {
            Request::Sessions => Response::ok(self.session_views()),
            Request::Status => Response::ok(self.status()),
            Request::Explain { id } => match self.explain(&id) {
                Some(e) => Response::ok(e),
                None => Response::error(format!(
                    "no live session with id `{id}` (see `session-monitor sessions`)"
                )),
            },
            Request::Revoke(revoke) => self.revoke(caller, revoke),
            Request::Unrevoke(who) => self.unrevoke(caller, &who),
            Request::Revocations => Response::ok(self.revocations.list()),
        }
    }

    pub fn session_views(&self) -> Vec<SessionView> {
        let now = clock::boot_ns();
        let mut views: Vec<SessionView> = self.table.iter().map(|s| self.view(s, now)).collect();
        // Logins with a terminal first, by terminal; then those without.
        views.sort_by(|a, b| {
            (a.tty.is_none(), &a.tty, &a.id).cmp(&(b.tty.is_none(), &b.tty, &b.id))
        });
        views
    }

    /// One login as the CLI shows it: input counted on its terminals and written by
    /// its transport.
    fn view(&self, login: &crate::sessions::Login, now: u64) -> SessionView {
        let mut input = (0, 0);
        let mut own = 0;
        for t in &login.terminals {
            if let Some(a) = self.maps.activity(&t.key) {
                input.0 += a.input_bytes;
                input.1 += a.input_count;
                own = own.max(a.last_input_ns);
            }
        }
        if let Some(a) = self.maps.login_activity(login.key) {
            input.0 += a.input_bytes;
            input.1 += a.input_count;
            if !login.forwarding_only() {
                own = own.max(a.last_input_ns);
            }
        }
        let server = login
            .has_network_peer()
            .then(|| self.maps.proc_state(login.identity.pid))
            .flatten();
        let last_input = self.timing(login).last_input_ns;
        login.view(input, own, server.as_ref(), last_input, now)
    }

    fn explain(&self, id: &str) -> Option<Explanation> {
        let login = self.table.by_id(id)?;
        let now = clock::boot_ns();
        let at = |ns: u64| clock::rfc3339(clock::boot_to_system(ns));
        let limits = &login.resolution.limits;
        let (next, reason, warn_at, end_at) = match self.next_for(&login.key) {
            Next::Warn {
                at_ns,
                end_ns,
                reason,
            } => {
                let end = end_ns.max(at_ns + limits.warn_before.as_nanos() as u64);
                ("warn", Some(reason), Some(at_ns), Some(end))
            }
            Next::End { at_ns, reason } => ("end", Some(reason), None, Some(at_ns)),
            Next::Never => ("none", None, None, None),
        };
        Some(Explanation {
            session: self.view(login, now),
            groups: login.group_names.clone(),
            rule: login.resolution.rule.clone(),
            matched_rules: login.resolution.matched.clone(),
            limits: serde_json::to_value::<&Limits>(limits).unwrap_or_default(),
            mode: self.mode(),
            next: next.to_string(),
            reason: reason.map(|r| r.as_str().to_string()),
            warn_at: warn_at.map(at),
            end_at: end_at.map(at),
            end_in_seconds: end_at.map(|t| clock::seconds_between(now, t)),
            warned: login.warned.is_some(),
            ending: login.ending.is_some(),
        })
    }

    pub fn status(&self) -> Status {
        let counters = self.maps.counters();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            backend: self.probes.backend.to_string(),
            fallback_reason: self.probes.fallback_reason.clone(),
            programs: self
                .probes
                .attached()
                .iter()
                .map(ProgramStatus::of)
                .collect(),
            standby_programs: self
                .probes
                .standby()
                .map(|(program, needed, attached)| StandbyStatus {
                    program: ProgramStatus::of(&program),
                    attached_while: needed.describe().to_string(),
                    attached,
                })
                .collect(),
            skipped_programs: self.probes.skipped.clone(),
            udp_source: self.probes.udp_source.map(|u| u.describe().to_string()),
            kernel_revocation: self.probes.kernel_revoke,
            offsets: super::status::offsets_json(&self.probes.offsets),
            ring_buffer_drops: counters.dropped(),
            counters: serde_json::to_value(&counters).unwrap_or_default(),
            events_received: self.events_received(),
            sessions: self.table.len(),
            unresolved_terminals: self.unresolved.len(),
            uptime_seconds: self.started.elapsed().as_secs(),
            policy: self.policy.describe(),
            mode: self.mode(),
            audit_log: self.audit.path().map(|p| p.display().to_string()),
            policy_reloads_ok: self.reloads.0,
            policy_reloads_rejected: self.reloads.1,
            metrics_addr: self.metrics_addr.map(|a| a.to_string()),
            kernel_state: self
                .probes
                .pins
                .as_ref()
                .map(|p| super::status::KernelState {
                    dir: p.dir().display().to_string(),
                    found: p.found.as_str().to_string(),
                    links_pinned: p.links_pinned(),
                }),
        }
    }
}
