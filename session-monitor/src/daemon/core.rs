//! The daemon's state and everything that changes it.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use session_monitor_common::{Event, EventKind, TtyKey, state::proc_flags};
use tokio::time::Instant;

use super::status::{ProgramStatus, Status};
use crate::{
    clock,
    control::{Incoming, Request, Response},
    probes::{KernelMaps, Probes},
    sessions::{
        Resolved, Resolver, Session, SessionKind, SessionTable, SessionView, discover_existing,
    },
};

/// A terminal the probes reported that is not resolved to a session yet.
struct Pending {
    /// A process seen writing to it (the transport, for input).
    hint: Option<u32>,
    attempts: u32,
    next_try: Instant,
}

/// Quick retries cover the moment between a pty's first write and its shell
/// becoming session leader; after that, reconcile retries at its own pace.
const RESOLVE_BATCH_DELAY: Duration = Duration::from_millis(20);
const RESOLVE_QUICK_ATTEMPTS: u32 = 6;
/// A terminal written to but without a login session for this long is forgotten in
/// the kernel map (it is noticed again on its next write).
const UNRESOLVED_FORGET_AFTER: Duration = Duration::from_secs(60);

pub struct Core {
    probes: Probes,
    maps: KernelMaps,
    table: SessionTable,
    pending: HashMap<TtyKey, Pending>,
    /// Terminals without a login session, with when that was first found.
    unresolved: HashMap<TtyKey, Instant>,
    received: Arc<AtomicU64>,
    started: Instant,
}

impl Core {
    pub fn new(probes: Probes, maps: KernelMaps, received: Arc<AtomicU64>) -> Self {
        Self {
            probes,
            maps,
            table: SessionTable::default(),
            pending: HashMap::new(),
            unresolved: HashMap::new(),
            received,
            started: Instant::now(),
        }
    }

    /// Sessions opened before the daemon started. Their idle time starts from the
    /// terminal's last access time, which the kernel updates when input is read.
    pub fn discover_existing(&mut self) {
        let found = discover_existing();
        let count = found.len();
        for terminal in found {
            let resolved = terminal.resolved;
            let last_input = resolved.tty_atime.map(clock::system_to_boot).unwrap_or(0);
            if let Err(err) = self
                .maps
                .seed_activity(resolved.key, clock::boot_ns(), last_input)
            {
                tracing::warn!("{err:#}");
            }
            self.add_session(resolved, "discovered");
        }
        tracing::info!(sessions = count, "start-up discovery done");
    }

    fn add_session(&mut self, resolved: Resolved, how: &str) {
        let session = Session::from_resolved(resolved, clock::boot_ns());
        if let Err(err) = self.maps.track(session.leader.pid, proc_flags::WATCH_EXIT) {
            tracing::warn!("{err:#}");
        }
        if let Some(server) = session.server {
            let mut flags = proc_flags::WATCH_EXIT;
            if session.kind == SessionKind::Mosh {
                flags |= proc_flags::WATCH_UDP;
            }
            if let Err(err) = self.maps.track(server.pid, flags) {
                tracing::warn!("{err:#}");
            }
        }
        tracing::info!(
            id = %session.id,
            tty = %session.tty,
            kind = %session.kind,
            user = %session.user,
            leader = session.leader.pid,
            server = ?session.server.map(|s| s.pid),
            remote = ?session.remote,
            "session {how}"
        );
        self.unresolved.remove(&session.key);
        self.table.insert(session);
    }

    fn end_session(&mut self, key: &TtyKey, reason: &str) {
        let Some(session) = self.table.remove(key) else {
            return;
        };
        self.maps.forget_tty(key);
        for pid in std::iter::once(session.leader.pid).chain(session.server.map(|s| s.pid)) {
            if !self.table.pid_in_use(pid) {
                self.maps.untrack(pid);
            }
        }
        tracing::info!(id = %session.id, tty = %session.tty, user = %session.user, reason, "session ended");
    }

    pub fn on_event(&mut self, event: Event) {
        match event.kind() {
            Some(EventKind::TtyFirstInput) | Some(EventKind::TtyFirstOutput) => {
                if !self.table.contains(&event.key) {
                    self.queue_resolution(event.key, Some(event.tgid));
                }
            }
            Some(EventKind::TtyInput) => {
                if !self.table.contains(&event.key) && !self.pending.contains_key(&event.key) {
                    self.queue_resolution(event.key, Some(event.tgid));
                }
            }
            Some(EventKind::ProcessExit) => {
                for key in self.table.keys_of_pid(event.tgid) {
                    self.end_session(&key, "logout");
                }
            }
            Some(EventKind::RevokedInputBlocked) => {
                tracing::warn!(
                    pid = event.tgid,
                    uid = event.value,
                    "input of a revoked user stopped in the kernel"
                );
            }
            None => tracing::warn!(kind = event.kind, "unknown event kind"),
        }
    }

    fn queue_resolution(&mut self, key: TtyKey, hint: Option<u32>) {
        self.pending.entry(key).or_insert(Pending {
            hint,
            attempts: 0,
            next_try: Instant::now() + RESOLVE_BATCH_DELAY,
        });
    }

    pub fn next_resolution(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next_try).min()
    }

    /// Resolves every due terminal from one snapshot of /proc.
    pub fn resolve_pending(&mut self) {
        let now = Instant::now();
        let due: Vec<TtyKey> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return;
        }
        let mut resolver = Resolver::snapshot();
        for key in due {
            let Some(pending) = self.pending.get_mut(&key) else {
                continue;
            };
            if self.table.contains(&key) {
                self.pending.remove(&key);
                continue;
            }
            match resolver.resolve(key, pending.hint) {
                Some(resolved) => {
                    self.pending.remove(&key);
                    self.add_session(resolved, "started");
                }
                None => {
                    pending.attempts += 1;
                    if pending.attempts >= RESOLVE_QUICK_ATTEMPTS {
                        self.pending.remove(&key);
                        self.unresolved.entry(key).or_insert(now);
                    } else {
                        pending.next_try = now + Duration::from_millis(25 << pending.attempts);
                    }
                }
            }
        }
    }

    /// Catches what events alone would miss: exits of processes that were not yet
    /// tracked, terminals whose session appeared late, and stale map entries.
    pub fn reconcile(&mut self) {
        let dead: Vec<TtyKey> = self
            .table
            .iter()
            .filter(|s| !s.leader.is_alive() || s.server.is_some_and(|srv| !srv.is_alive()))
            .map(|s| s.key)
            .collect();
        for key in dead {
            self.end_session(&key, "logout");
        }

        let known: Vec<TtyKey> = self
            .maps
            .tty_keys()
            .into_iter()
            .filter(|k| !self.table.contains(k) && !self.pending.contains_key(k))
            .collect();
        if known.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut resolver = Resolver::snapshot();
        for key in known {
            match resolver.resolve(key, None) {
                Some(resolved) => self.add_session(resolved, "started"),
                None => {
                    let since = *self.unresolved.entry(key).or_insert(now);
                    if now.duration_since(since) >= UNRESOLVED_FORGET_AFTER {
                        self.unresolved.remove(&key);
                        self.maps.forget_tty(&key);
                    }
                }
            }
        }
    }

    pub fn on_control(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Request {
                request,
                caller,
                reply,
            } => {
                tracing::debug!(
                    uid = caller.uid,
                    request = request.name(),
                    "control request"
                );
                let response = self.handle(request);
                let _ = reply.send(response);
            }
            Incoming::Refused { caller, reason } => {
                tracing::warn!(uid = caller.uid, pid = ?caller.pid, "control request refused: {reason}");
            }
        }
    }

    fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Sessions => Response::ok(self.session_views()),
            Request::Status => Response::ok(self.status()),
            other => Response::error(format!(
                "`{}` is not supported by this daemon yet",
                other.name()
            )),
        }
    }

    pub fn session_views(&self) -> Vec<SessionView> {
        let now = clock::boot_ns();
        let mut views: Vec<SessionView> = self
            .table
            .iter()
            .map(|s| {
                let activity = self.maps.activity(&s.key);
                let server = s.server.and_then(|srv| self.maps.proc_state(srv.pid));
                s.view(activity.as_ref(), server.as_ref(), now)
            })
            .collect();
        views.sort_by(|a, b| a.tty.cmp(&b.tty).then(a.id.cmp(&b.id)));
        views
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
                .attached
                .iter()
                .map(|p| ProgramStatus {
                    name: p.name.to_string(),
                    attach: p.attach.clone(),
                    probe: p.probe.to_string(),
                })
                .collect(),
            skipped_programs: self.probes.skipped.clone(),
            udp_source: self.probes.udp_source.map(|u| {
                let (category, name) = u.tracepoint();
                format!("tracepoint/{category}/{name}")
            }),
            kernel_revocation: self.probes.kernel_revoke,
            offsets: json!(offsets_json(&self.probes.offsets)),
            ring_buffer_drops: counters.dropped(),
            counters: serde_json::to_value(&counters).unwrap_or_default(),
            events_received: self.received.load(Ordering::Relaxed),
            sessions: self.table.len(),
            unresolved_terminals: self.unresolved.len(),
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }
}

fn offsets_json(o: &session_monitor_common::config::KernelOffsets) -> serde_json::Value {
    json!({
        "task_struct.files": o.task_files,
        "files_struct.fdt": o.files_fdt,
        "fdtable.max_fds": o.fdtable_max_fds,
        "fdtable.fd": o.fdtable_fd,
        "file.f_inode": o.file_f_inode,
        "file.private_data": o.file_private_data,
        "inode.i_mode": o.inode_i_mode,
        "inode.i_rdev": o.inode_i_rdev,
        "inode.i_sb": o.inode_i_sb,
        "tty_file_private.tty": o.tty_file_private_tty,
        "tty_struct.index": o.tty_index,
        "tty_struct.driver": o.tty_driver,
        "tty_struct.link": o.tty_link,
        "tty_struct.driver_data": o.tty_driver_data,
        "tty_driver.major": o.tty_driver_major,
        "tty_driver.minor_start": o.tty_driver_minor_start,
        "dentry.d_sb": o.dentry_d_sb,
        "super_block.s_dev": o.super_block_s_dev,
        "kiocb.ki_filp": o.kiocb_ki_filp,
        "iov_iter.count": o.iov_iter_count,
        "sk_buff.sk": o.sk_buff_sk,
        "sock.sk_protocol": o.sock_sk_protocol,
    })
}
