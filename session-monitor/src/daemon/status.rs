//! What `session-monitor status` shows.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub kernel: String,
    pub backend: String,
    /// Why `auto` did not pick fentry, if it did not.
    pub fallback_reason: Option<String>,
    pub programs: Vec<ProgramStatus>,
    pub skipped_programs: Vec<String>,
    pub udp_source: Option<String>,
    /// Input of revoked users is stopped in the kernel (else by the daemon only).
    pub kernel_revocation: bool,
    pub offsets: serde_json::Value,
    pub counters: serde_json::Value,
    pub events_received: u64,
    pub ring_buffer_drops: u64,
    pub sessions: usize,
    pub unresolved_terminals: usize,
    pub uptime_seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub name: String,
    pub attach: String,
    pub probe: String,
}
