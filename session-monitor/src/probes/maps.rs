//! Typed access to the maps the probes share with the daemon.

use super::pts_slots::PtsSlots;
use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
};
use serde::Serialize;
use session_monitor_common::{
    LoginActivity, LoginId, Probe, ProcState, Stat, TtyActivity, TtyKey,
    counters::{
        COUNTER_ANSWERS_IGNORED, COUNTER_INJECTIONS_IGNORED, COUNTER_LOGIN_INSERT_FAILURES,
        COUNTER_PROCS_INSERT_FAILURES, COUNTER_READ_ERRORS, COUNTER_REVOKE_SIGNALS, slot,
    },
    map_names,
    state::{pid_bits, proc_flags},
};

pub struct KernelMaps {
    /// Terminals without a slot in `pts` (see [`session_monitor_common::PtsSlot`]).
    activity: HashMap<MapData, TtyKey, TtyActivity>,
    /// Pseudo-terminals by number: a terminal is in one of the two maps.
    pts: PtsSlots,
    procs: HashMap<MapData, u32, ProcState>,
    #[allow(dead_code, reason = "API for the login model of issue 11")]
    login_activity: HashMap<MapData, LoginId, LoginActivity>,
    revoked_uids: HashMap<MapData, u32, u32>,
    /// The probes' gate in front of `revoked_uids` (see [`Self::set_revoked_uid`]).
    revoked_any: Array<MapData, u32>,
    /// The probes' gate in front of the transport flag in `procs`.
    transport_pids: DaemonPidBits,
    /// With the probes' own `FORKED_PIDS`, the gate in front of `procs` on every fork,
    /// exit and UDP receive: the processes the daemon put into `procs`.
    adopted_pids: DaemonPidBits,
    counters: PerCpuArray<MapData, u64>,
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

/// A set of pids that only the daemon writes (`TRANSPORT_PIDS`, `ADOPTED_PIDS`: one
/// bit per pid, see `session_monitor_common::state::pid_bits`). The daemon writes
/// each from one place, so a read and a write of a word lose no other bit.
struct DaemonPidBits {
    words: Array<MapData, u64>,
    name: &'static str,
}

impl DaemonPidBits {
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self> {
        Ok(Self {
            words: Array::try_from(take(ebpf, name)?)?,
            name,
        })
    }

    /// Sets or clears process `tgid`'s bit.
    fn mark(&mut self, tgid: u32, set: bool) -> Result<()> {
        let word = pid_bits::word(tgid);
        let context = || format!("marking process {tgid} in {}", self.name);
        let old = self.words.get(&word, 0).with_context(context)?;
        let new = if set {
            old | pid_bits::bit(tgid)
        } else {
            old & !pid_bits::bit(tgid)
        };
        if new != old {
            self.words.set(word, new, 0).with_context(context)?;
        }
        Ok(())
    }
}

impl KernelMaps {
    /// Takes the maps (and the event ring buffer) out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<(Self, RingBuf<MapData>)> {
        let mut maps = Self {
            activity: HashMap::try_from(take(ebpf, map_names::TTY_ACTIVITY)?)?,
            pts: PtsSlots::map(take(ebpf, map_names::PTS_ACTIVITY)?)?,
            procs: HashMap::try_from(take(ebpf, map_names::PROCS)?)?,
            login_activity: HashMap::try_from(take(ebpf, map_names::LOGIN_ACTIVITY)?)?,
            revoked_uids: HashMap::try_from(take(ebpf, map_names::REVOKED_UIDS)?)?,
            revoked_any: Array::try_from(take(ebpf, map_names::REVOKED_ANY)?)?,
            transport_pids: DaemonPidBits::take(ebpf, map_names::TRANSPORT_PIDS)?,
            adopted_pids: DaemonPidBits::take(ebpf, map_names::ADOPTED_PIDS)?,
            counters: PerCpuArray::try_from(take(ebpf, map_names::COUNTERS)?)?,
        };
        let ring = RingBuf::try_from(take(ebpf, map_names::EVENTS)?)?;
        // Pinned maps reused from a previous daemon: the gates must cover what the
        // maps already hold.
        if maps.revoked_uids.keys().next().is_some() {
            maps.set_revoked_any(true)?;
        }
        for (tgid, state) in maps.memberships() {
            maps.adopted_pids.mark(tgid, true)?;
            if state.flags & proc_flags::TRANSPORT != 0 {
                maps.transport_pids.mark(tgid, true)?;
            }
        }
        Ok((maps, ring))
    }

    /// Current activity of a terminal, if the kernel knows it.
    pub fn activity(&self, key: &TtyKey) -> Option<TtyActivity> {
        match self.pts.held(key) {
            Some((_, activity)) => Some(activity),
            None => self.activity.get(key, 0).ok(),
        }
    }

    /// Whether terminal `key` is in its slot of `PTS_ACTIVITY`, where a keystroke
    /// finds it fastest (for tests and diagnostics).
    pub fn in_pts_slot(&self, key: &TtyKey) -> bool {
        self.pts.held(key).is_some()
    }

    /// Every terminal the kernel knows.
    pub fn tty_keys(&self) -> Vec<TtyKey> {
        self.pts
            .keys()
            .chain(self.activity.keys().filter_map(Result::ok))
            .collect()
    }

    /// Records what the daemon learned about a terminal before the probes saw its
    /// input (at start-up, from the tty's access time). The probes may already have an
    /// entry made by program output alone; its missing input time is filled in, but
    /// input the probes recorded is never overwritten. A terminal the kernel does not
    /// know yet takes its slot, as the probes would.
    pub fn seed_activity(&mut self, key: TtyKey, last_input_ns: u64) -> Result<()> {
        let in_hash = self.activity.get(&key, 0).ok();
        // Claiming a slot the terminal holds already succeeds too.
        if in_hash.is_none() && self.pts.claim(&key) {
            if let Some((index, activity)) = self.pts.held(&key)
                && activity.last_input_ns == 0
            {
                self.pts.set_last_input(index, last_input_ns);
            }
            return Ok(());
        }
        let value = match in_hash {
            Some(existing) if existing.last_input_ns != 0 => return Ok(()),
            Some(existing) => TtyActivity {
                last_input_ns,
                ..existing
            },
            None => TtyActivity {
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
        self.pts.free(key);
        let _ = self.activity.remove(key);
    }

    pub fn untrack(&mut self, tgid: u32) {
        let _ = self.procs.remove(&tgid);
        // The gates close after the entry is gone.
        for gate in [&mut self.transport_pids, &mut self.adopted_pids] {
            if let Err(err) = gate.mark(tgid, false) {
                tracing::debug!("{err:#}");
            }
        }
    }

    pub fn proc_state(&self, tgid: u32) -> Option<ProcState> {
        self.procs.get(&tgid, 0).ok()
    }

    /// Makes process `tgid` a member of `login` with exactly `flags` ([`proc_flags`]),
    /// replacing its login and flags and keeping what the kernel recorded (its last
    /// UDP receive). From then on every process it forks joins the login, in the
    /// kernel, at fork. The kernel forgets the entry when the process exits; check
    /// that the process still lives after adopting it (an entry made for a process
    /// that exited just before is removed by the next fork that reuses the pid).
    ///
    /// [`proc_flags`]: session_monitor_common::state::proc_flags
    pub fn adopt(&mut self, tgid: u32, login: LoginId, flags: u32) -> Result<()> {
        let existing = self.procs.get(&tgid, 0).unwrap_or_default();
        let state = ProcState {
            login,
            flags,
            ..existing
        };
        self.with_gates(tgid, flags, |procs| {
            procs
                .insert(tgid, state, 0)
                .with_context(|| format!("adding process {tgid} to login {login:#x}"))
        })
    }

    /// Sets the flags of process `tgid` to exactly `flags`, keeping its login (none if
    /// the kernel did not know the process).
    #[allow(dead_code, reason = "API for the login model of issue 11")]
    pub fn set_flags(&mut self, tgid: u32, flags: u32) -> Result<()> {
        let existing = self.procs.get(&tgid, 0).ok();
        // A terminal server of ten thousand sessions gets the same flags for each.
        if existing.is_some_and(|e| e.flags == flags) {
            return Ok(());
        }
        let state = ProcState {
            flags,
            ..existing.unwrap_or_default()
        };
        self.with_gates(tgid, flags, |procs| {
            procs
                .insert(tgid, state, 0)
                .with_context(|| format!("setting flags {flags:#x} of process {tgid}"))
        })
    }

    /// Runs `write`, which puts process `tgid` into `procs` with exactly `flags`,
    /// behind open gates: its bit in `ADOPTED_PIDS` is set before the write (a probe
    /// never misses an entry), and its bit in the transports' gate is set to match,
    /// before the write when it becomes a transport (a probe that sees the flag
    /// always got through the gate), after it otherwise.
    fn with_gates(
        &mut self,
        tgid: u32,
        flags: u32,
        write: impl FnOnce(&mut HashMap<MapData, u32, ProcState>) -> Result<()>,
    ) -> Result<()> {
        self.adopted_pids.mark(tgid, true)?;
        let transport = flags & proc_flags::TRANSPORT != 0;
        if transport {
            self.transport_pids.mark(tgid, true)?;
        }
        write(&mut self.procs)?;
        if !transport {
            self.transport_pids.mark(tgid, false)?;
        }
        Ok(())
    }

    /// Every process (tgid) of `login` the kernel knows: those adopted into it and
    /// every process forked from them since, wherever they moved (new session,
    /// process group or parent). Walks the whole map.
    #[allow(dead_code, reason = "API for the login model of issue 11")]
    pub fn members(&self, login: LoginId) -> Vec<u32> {
        self.memberships()
            .into_iter()
            .filter(|(_, state)| state.login == login)
            .map(|(tgid, _)| tgid)
            .collect()
    }

    /// Every process the kernel knows, with its state: one walk of the map for all
    /// logins at once.
    #[allow(dead_code, reason = "API for the login model of issue 11")]
    pub fn memberships(&self) -> Vec<(u32, ProcState)> {
        self.procs.iter().filter_map(Result::ok).collect()
    }

    /// Input of `login` without a terminal (its transport's writes into pipes and
    /// AF_UNIX sockets), if there was any since it was last forgotten.
    #[allow(dead_code, reason = "API for the login model of issue 11")]
    pub fn login_activity(&self, login: LoginId) -> Option<LoginActivity> {
        self.login_activity.get(&login, 0).ok()
    }

    /// Forgets the input of a login that ended. Its processes stay members until they
    /// exit.
    #[allow(dead_code, reason = "API for the login model of issue 11")]
    pub fn forget_login(&mut self, login: LoginId) {
        let _ = self.login_activity.remove(&login);
    }

    /// Revokes `uid` in the kernel or lifts that. The probes look at `REVOKED_UIDS`
    /// only while `REVOKED_ANY` is set, so the order is what keeps a revoked user's
    /// keystroke from slipping through: the gate opens before a uid goes in, and
    /// closes only after the last one is out.
    pub fn set_revoked_uid(&mut self, uid: u32, revoked: bool) -> Result<()> {
        if revoked {
            self.set_revoked_any(true)?;
            self.revoked_uids
                .insert(uid, 1, 0)
                .with_context(|| format!("revoking uid {uid} in the kernel"))
        } else {
            match self.revoked_uids.remove(&uid) {
                Ok(()) => {}
                Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("lifting revocation of uid {uid} in the kernel"));
                }
            }
            if self.revoked_uids.keys().next().is_none() {
                self.set_revoked_any(false)?;
            }
            Ok(())
        }
    }

    /// Sets the probes' gate in front of `REVOKED_UIDS` (see [`Self::set_revoked_uid`]).
    fn set_revoked_any(&mut self, any: bool) -> Result<()> {
        self.revoked_any
            .set(0, u32::from(any), 0)
            .context("setting REVOKED_ANY, the kernel's gate in front of REVOKED_UIDS")
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
            injections_ignored: sum(COUNTER_INJECTIONS_IGNORED),
            procs_insert_failures: sum(COUNTER_PROCS_INSERT_FAILURES),
            login_insert_failures: sum(COUNTER_LOGIN_INSERT_FAILURES),
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
    /// Writes into pty masters, and console input, that held only terminal
    /// answers: not input.
    pub answers_ignored: u64,
    /// Console input its own session put there (TIOCSTI): not input.
    pub injections_ignored: u64,
    /// Processes of a login the kernel could not record (map `PROCS` full).
    pub procs_insert_failures: u64,
    /// Logins whose input the kernel could not record (map `LOGIN_ACTIVITY` full).
    pub login_insert_failures: u64,
}

impl CounterSnapshot {
    pub fn dropped(&self) -> u64 {
        self.probes.iter().map(|p| p.dropped).sum()
    }
}
