//! Typed access to the maps the probes share with the daemon.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
};
use serde::Serialize;
use session_monitor_common::{
    Probe, ProcState, Stat, TtyActivity, TtyKey,
    counters::{COUNTER_ANSWERS_IGNORED, COUNTER_READ_ERRORS, COUNTER_REVOKE_SIGNALS, slot},
    map_names,
};

pub struct KernelMaps {
    activity: HashMap<MapData, TtyKey, TtyActivity>,
    procs: HashMap<MapData, u32, ProcState>,
    revoked_uids: HashMap<MapData, u32, u32>,
    counters: PerCpuArray<MapData, u64>,
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

impl KernelMaps {
    /// Takes the maps (and the event ring buffer) out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<(Self, RingBuf<MapData>)> {
        let maps = Self {
            activity: HashMap::try_from(take(ebpf, map_names::TTY_ACTIVITY)?)?,
            procs: HashMap::try_from(take(ebpf, map_names::PROCS)?)?,
            revoked_uids: HashMap::try_from(take(ebpf, map_names::REVOKED_UIDS)?)?,
            counters: PerCpuArray::try_from(take(ebpf, map_names::COUNTERS)?)?,
        };
        let ring = RingBuf::try_from(take(ebpf, map_names::EVENTS)?)?;
        Ok((maps, ring))
    }

    /// Current activity of a terminal, if the kernel knows it.
    pub fn activity(&self, key: &TtyKey) -> Option<TtyActivity> {
        self.activity.get(key, 0).ok()
    }

    /// Every terminal the kernel knows.
    pub fn tty_keys(&self) -> Vec<TtyKey> {
        self.activity.keys().filter_map(Result::ok).collect()
    }

    /// Records what the daemon learned about a terminal before the probes saw its
    /// input (at start-up, from the tty's access time). The probes may already have an
    /// entry made by program output alone; its missing input time is filled in, but
    /// input the probes recorded is never overwritten.
    pub fn seed_activity(
        &mut self,
        key: TtyKey,
        first_seen_ns: u64,
        last_input_ns: u64,
    ) -> Result<()> {
        let value = match self.activity.get(&key, 0) {
            Ok(existing) if existing.last_input_ns != 0 => return Ok(()),
            Ok(existing) => TtyActivity {
                last_input_ns,
                ..existing
            },
            Err(_) => TtyActivity {
                first_seen_ns,
                last_input_ns,
                ..TtyActivity::default()
            },
        };
        self.activity
            .insert(key, value, 0)
            .context("seeding terminal activity")
    }

    /// Forgets a terminal whose session ended; its next write starts a new one.
    pub fn forget_tty(&mut self, key: &TtyKey) {
        let _ = self.activity.remove(key);
    }

    /// Starts or updates tracking of a process, keeping what the kernel recorded.
    pub fn track(&mut self, tgid: u32, flags: u32) -> Result<()> {
        let mut state = self.procs.get(&tgid, 0).unwrap_or_default();
        if state.flags & flags == flags && state.flags != 0 {
            return Ok(());
        }
        state.flags |= flags;
        self.procs
            .insert(tgid, state, 0)
            .with_context(|| format!("tracking process {tgid}"))
    }

    pub fn untrack(&mut self, tgid: u32) {
        let _ = self.procs.remove(&tgid);
    }

    pub fn proc_state(&self, tgid: u32) -> Option<ProcState> {
        self.procs.get(&tgid, 0).ok()
    }

    pub fn set_revoked_uid(&mut self, uid: u32, revoked: bool) -> Result<()> {
        if revoked {
            self.revoked_uids
                .insert(uid, 1, 0)
                .with_context(|| format!("revoking uid {uid} in the kernel"))
        } else {
            match self.revoked_uids.remove(&uid) {
                Ok(()) => Ok(()),
                Err(MapError::KeyNotFound) => Ok(()),
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                Err(e) => {
                    Err(e).with_context(|| format!("lifting revocation of uid {uid} in the kernel"))
                }
            }
        }
    }

    pub fn revoked_uids(&self) -> Vec<u32> {
        self.revoked_uids.keys().filter_map(Result::ok).collect()
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> CounterSnapshot {
        let sum = |index: u32| -> u64 {
            self.counters
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        let probes = Probe::ALL
            .iter()
            .map(|&probe| ProbeCounters {
                probe: probe.name(),
                seen: sum(slot(probe, Stat::Seen)),
                matched: sum(slot(probe, Stat::Matched)),
                sent: sum(slot(probe, Stat::Sent)),
                dropped: sum(slot(probe, Stat::Dropped)),
            })
            .collect();
        CounterSnapshot {
            probes,
            revoke_signals: sum(COUNTER_REVOKE_SIGNALS),
            read_errors: sum(COUNTER_READ_ERRORS),
            answers_ignored: sum(COUNTER_ANSWERS_IGNORED),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ProbeCounters {
    pub probe: &'static str,
    pub seen: u64,
    pub matched: u64,
    pub sent: u64,
    /// Ring-buffer reservations that failed.
    pub dropped: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CounterSnapshot {
    pub probes: Vec<ProbeCounters>,
    pub revoke_signals: u64,
    pub read_errors: u64,
    /// Writes into pty masters that held only terminal answers: not input.
    pub answers_ignored: u64,
}

impl CounterSnapshot {
    pub fn dropped(&self) -> u64 {
        self.probes.iter().map(|p| p.dropped).sum()
    }
}
