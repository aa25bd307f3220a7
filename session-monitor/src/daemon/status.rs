//! What `session-monitor status` shows.

use serde::{Deserialize, Serialize};
use session_monitor_common::config::KernelOffsets;

use crate::{policy::Mode, probes::AttachedProgram};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub kernel: String,
    pub backend: String,
    /// Why `auto` did not pick fentry, if it did not.
    pub fallback_reason: Option<String>,
    /// The programs attached now.
    pub programs: Vec<ProgramStatus>,
    /// Programs loaded but attached only while they have work.
    #[serde(default)]
    pub standby_programs: Vec<StandbyStatus>,
    pub skipped_programs: Vec<String>,
    pub udp_source: Option<String>,
    /// Input of revoked users is stopped in the kernel (else by the daemon only).
    pub kernel_revocation: bool,
    /// Structure member offsets resolved from the running kernel's BTF.
    pub offsets: serde_json::Value,
    pub counters: serde_json::Value,
    pub events_received: u64,
    pub ring_buffer_drops: u64,
    pub sessions: usize,
    pub unresolved_terminals: usize,
    pub uptime_seconds: u64,
    pub policy: String,
    pub mode: Mode,
    pub audit_log: Option<String>,
    pub policy_reloads_ok: u64,
    pub policy_reloads_rejected: u64,
    /// Where /metrics, /healthz and /readyz are served (None: off).
    pub metrics_addr: Option<String>,
    /// The kernel state pinned across restarts (None: pinning off).
    pub kernel_state: Option<KernelState>,
}

/// What survives a restart of the daemon, and what this start found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelState {
    /// `<--pin-dir>/<layout>`.
    pub dir: String,
    /// `reused` (the previous daemon's maps), `fresh` or `replaced` (another
    /// layout's state was removed).
    pub found: String,
    /// The programs stay attached if the daemon dies (input during a restart counts).
    pub links_pinned: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub name: String,
    pub attach: String,
    pub probe: String,
}

impl ProgramStatus {
    pub fn of(p: &AttachedProgram) -> Self {
        Self {
            name: p.name.to_string(),
            attach: p.attach.clone(),
            probe: p.probe.to_string(),
        }
    }
}

/// A program on standby: loaded at start, attached only while it has work.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StandbyStatus {
    #[serde(flatten)]
    pub program: ProgramStatus,
    /// When it is attached, in words.
    pub attached_while: String,
    /// Whether it is attached now.
    pub attached: bool,
}

/// Offsets keyed `struct.member`, as BTF names them (a renamed member by its newest
/// name): one key per member of the kernel contract.
pub fn offsets_json(o: &KernelOffsets) -> serde_json::Value {
    o.by_member()
        .map(|(member, offset)| (member.to_string(), offset.into()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_keyed_struct_dot_member_one_per_member() {
        let offsets = KernelOffsets {
            tty_index: 32,
            iov_iter_iov: 16,
            ..KernelOffsets::default()
        };
        let json = offsets_json(&offsets);
        let keys = json.as_object().unwrap();
        assert_eq!(keys.len(), KernelOffsets::MEMBERS.len());
        assert_eq!(keys["tty_struct.index"], 32);
        // A renamed member goes by its newest name.
        assert_eq!(keys["iov_iter.__iov"], 16);
        assert!(!keys.contains_key("iov_iter.iov"));
    }
}
