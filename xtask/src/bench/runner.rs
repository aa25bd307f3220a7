//! Alternation: each workload runs detached and attached in turn, `D A D A ... D`,
//! in one process with the same descriptors and children, so that the only thing
//! that differs between two neighbouring runs is whether the daemon is running.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::{
    bpf::{self, ProgCost, ProgSamples},
    daemon::{self, Counters, Daemon, DaemonSpec},
    floor::{AttachPoint, Floor},
    profile::{Profile, Recording},
    stats::{Interval, Summary, bracketed_ratios, median_interval},
    sys,
    workloads::{Kind, Sample, Target, Verdict, Workload},
};
use crate::cmd;

/// How long and how often.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Plan {
    /// Attached runs per workload (there is one more detached run).
    pub pairs: usize,
    pub measure: Duration,
    /// Run before every measured run (and before the first detached one).
    pub warmup: Duration,
    /// Profile (perf) the workloads that miss their target.
    pub profile: bool,
    /// Wait for other session-monitor daemons to go away before a run, and repeat a
    /// run they disturbed.
    pub wait_quiet: bool,
}

/// One measured run.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Run {
    /// Work done, in the workload's unit (e.g. MiB, writes).
    pub amount: f64,
    pub wall_s: f64,
    /// CPU time of the workload: this process, its session leaders, reaped children.
    pub cpu_s: f64,
    /// CPU time of the daemon over the same window (0 when detached).
    pub daemon_cpu_s: f64,
    /// Another session-monitor daemon ran during the run (its probes then slowed
    /// it down too); such runs are retried, and left out of the ratios if they stay so.
    pub disturbed: bool,
}

impl Run {
    pub fn throughput(&self) -> f64 {
        self.amount / self.wall_s
    }

    /// Work per CPU-second of everything involved: the workload and the daemon.
    pub fn per_cpu_second(&self) -> f64 {
        self.amount / (self.cpu_s + self.daemon_cpu_s)
    }
}

/// One run with the daemon attached.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AttachedRun {
    pub run: Run,
    pub rss_kib: u64,
    /// Kernel counters over the measured window.
    pub counters: Counters,
    /// Spawn to first answer on the control socket.
    pub ready_s: f64,
    /// Spawn to every benchmark session tracked.
    pub sessions_s: f64,
    /// SIGTERM to exit.
    pub stop_s: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadResult {
    pub name: String,
    pub kind: Kind,
    pub description: String,
    pub unit: String,
    /// Operations (system calls of the workload's kind) per unit.
    pub ops_per_unit: f64,
    pub target: Option<Target>,
    pub sessions: usize,
    pub detached: Vec<Run>,
    pub attached: Vec<AttachedRun>,
    /// Runs with empty programs on the daemon's attach points (the floor).
    pub floor: Vec<Run>,
    /// Per CPU-second (workload + daemon), attached over detached: what goals judge.
    pub ratios: Vec<f64>,
    /// Wall-clock throughput, attached over detached.
    pub wall_ratios: Vec<f64>,
    /// The same two ratios for the floor runs.
    pub floor_ratios: Vec<f64>,
    pub floor_wall_ratios: Vec<f64>,
    /// Per round: CPU seconds per unit of work attached, less the same with the
    /// floor: what the daemon's programs and the daemon itself cost above the hooks.
    pub above_floor_s: Vec<f64>,
    /// Pairs with a run disturbed by another session-monitor daemon (left out of
    /// the ratios unless all were).
    pub disturbed_pairs: usize,
    /// Per-program cost over one more attached run with BPF statistics on.
    pub programs: Vec<ProgCost>,
    /// The same for the empty programs, over one more floor run, named by their
    /// attach points: what a program run costs on each hook with nothing in it
    /// (the statistics' own clock reads included), which no program can go below.
    pub empty_programs: Vec<ProgCost>,
    /// Workload operations in that run (to relate program runs to operations).
    pub program_ops: f64,
    pub profile: Option<Profile>,
    pub profile_error: Option<String>,
}

impl WorkloadResult {
    pub fn ratio(&self) -> Summary {
        Summary::of(&self.ratios)
    }

    pub fn wall_ratio(&self) -> Summary {
        Summary::of(&self.wall_ratios)
    }

    pub fn floor_ratio(&self) -> Summary {
        Summary::of(&self.floor_ratios)
    }

    pub fn floor_wall_ratio(&self) -> Summary {
        Summary::of(&self.floor_wall_ratios)
    }

    /// CPU time per unit of work above the floor, in seconds (median of the rounds).
    pub fn above_floor_s(&self) -> f64 {
        Summary::of(&self.above_floor_s).median
    }

    /// The same per operation of the workload's kind, in ns.
    pub fn above_floor_ns_per_op(&self) -> f64 {
        self.above_floor_s() * 1e9 / self.ops_per_unit
    }

    /// The daemon's program runs per operation of the workload, in the run with
    /// statistics on (`None` when that run measured nothing).
    pub fn program_runs_per_op(&self) -> Option<f64> {
        let runs: u64 = self.programs.iter().map(|p| p.runs).sum();
        (!self.programs.is_empty() && self.program_ops > 0.0)
            .then(|| runs as f64 / self.program_ops)
    }

    /// The interval of the attached ratios' median that [`Verdict::WithinNoise`]
    /// is decided with.
    pub fn ratio_interval(&self) -> Option<Interval> {
        median_interval(&self.ratios, Verdict::CONFIDENCE)
    }

    pub fn verdict(&self) -> Option<Verdict> {
        Some(Verdict::judge(
            self.target?,
            self.ratio().median,
            self.floor_ratio().median,
            self.ratio_interval().map(|i| i.hi),
            self.program_runs_per_op(),
        ))
    }

    pub fn drops(&self) -> u64 {
        self.attached.iter().map(|a| a.counters.dropped).sum()
    }

    pub fn attached_runs(&self) -> Vec<Run> {
        self.attached.iter().map(|a| a.run).collect()
    }
}

/// Runs one workload through the whole alternation.
pub fn run_workload(
    spec: &DaemonSpec,
    policy: &Path,
    plan: &Plan,
    backend: &str,
    floor: &[AttachPoint],
    workload: &mut dyn Workload,
) -> Result<WorkloadResult> {
    let name = workload.name();
    cmd::step(format!("workload {name}: {}", workload.describe()));
    let mut result = WorkloadResult {
        name: name.clone(),
        kind: workload.kind(),
        description: workload.describe(),
        unit: workload.unit().to_string(),
        ops_per_unit: workload.ops_per_unit(),
        target: workload.kind().target(backend),
        sessions: workload.leaders().len(),
        detached: Vec::new(),
        attached: Vec::new(),
        floor: Vec::new(),
        ratios: Vec::new(),
        floor_ratios: Vec::new(),
        floor_wall_ratios: Vec::new(),
        above_floor_s: Vec::new(),
        wall_ratios: Vec::new(),
        disturbed_pairs: 0,
        programs: Vec::new(),
        empty_programs: Vec::new(),
        program_ops: 0.0,
        profile: None,
        profile_error: None,
    };
    result.detached.push(detached_run(plan, workload)?);
    for pair in 0..plan.pairs {
        // A then F in even rounds, F then A in odd ones: neither arm always runs
        // right after a detached run.
        if pair % 2 == 0 {
            result
                .attached
                .push(attached_run(spec, policy, plan, workload)?);
            result.floor.push(floor_run(floor, plan, workload)?);
        } else {
            result.floor.push(floor_run(floor, plan, workload)?);
            result
                .attached
                .push(attached_run(spec, policy, plan, workload)?);
        }
        result.detached.push(detached_run(plan, workload)?);
        let n = result.detached.len();
        let base = (result.detached[n - 2].per_cpu_second()
            + result.detached[n - 1].per_cpu_second())
            / 2.0;
        let wall =
            (result.detached[n - 2].throughput() + result.detached[n - 1].throughput()) / 2.0;
        let (a, f) = (result.attached[pair].run, result.floor[pair]);
        println!(
            "    round {}/{}: per CPU-second ratio attached {:.4}, floor {:.4}; wall-clock \
             attached {:.4}, floor {:.4}; daemon {:.2} % CPU",
            pair + 1,
            plan.pairs,
            a.per_cpu_second() / base,
            f.per_cpu_second() / base,
            a.throughput() / wall,
            f.throughput() / wall,
            a.daemon_cpu_s / a.wall_s * 100.0
        );
    }
    let attached = result.attached_runs();
    // Leave out the rounds where another daemon disturbed one of the four runs,
    // unless that leaves nothing.
    let clean: Vec<bool> = (0..attached.len())
        .map(|i| {
            !attached[i].disturbed
                && !result.floor[i].disturbed
                && !result.detached[i].disturbed
                && !result.detached.get(i + 1).is_some_and(|d| d.disturbed)
        })
        .collect();
    let keep_all = !clean.iter().any(|&c| c);
    let keep = |values: Vec<f64>| -> Vec<f64> {
        values
            .into_iter()
            .zip(&clean)
            .filter(|&(_, &c)| c || keep_all)
            .map(|(r, _)| r)
            .collect()
    };
    let ratios = |arm: &[Run], f: fn(&Run) -> f64| -> Vec<f64> {
        let det: Vec<f64> = result.detached.iter().map(f).collect();
        let arm: Vec<f64> = arm.iter().map(f).collect();
        keep(bracketed_ratios(&det, &arm))
    };
    result.ratios = ratios(&attached, Run::per_cpu_second);
    result.wall_ratios = ratios(&attached, Run::throughput);
    result.floor_ratios = ratios(&result.floor, Run::per_cpu_second);
    result.floor_wall_ratios = ratios(&result.floor, Run::throughput);
    result.above_floor_s = keep(
        attached
            .iter()
            .zip(&result.floor)
            .map(|(a, f)| 1.0 / a.per_cpu_second() - 1.0 / f.per_cpu_second())
            .collect(),
    );
    result.disturbed_pairs = clean.iter().filter(|&&c| !c).count();
    let (programs, ops) = program_costs(spec, policy, plan, workload)?;
    result.programs = programs;
    result.program_ops = ops;
    result.empty_programs = empty_program_costs(floor, plan, workload)?;
    let ratio = result.ratio();
    let wall_ratio = result.wall_ratio();
    println!(
        "    per CPU-second ratio median {:.4} (floor {:.4}, above it {:.0} ns per op; min {:.4}, \
         max {:.4}); wall-clock median {:.4} (min {:.4}, max {:.4}){}",
        ratio.median,
        result.floor_ratio().median,
        result.above_floor_ns_per_op(),
        ratio.min,
        ratio.max,
        wall_ratio.median,
        wall_ratio.min,
        wall_ratio.max,
        match (result.target, result.verdict()) {
            (Some(t), Some(Verdict::Met)) => format!("; goal {t} met"),
            (Some(t), Some(Verdict::WithinNoise)) => format!("; goal {t} within noise"),
            (Some(t), _) => format!("; goal {t} MISSED"),
            _ => String::new(),
        }
    );
    if plan.profile && result.verdict().is_some_and(Verdict::missed) {
        match profile(spec, policy, plan, workload) {
            Ok(p) => result.profile = Some(p),
            Err(err) => {
                println!("    profile unavailable: {err:#}");
                result.profile_error = Some(format!("{err:#}"));
            }
        }
    }
    Ok(result)
}

/// How long to wait for other session-monitor daemons (of tests running on the same
/// machine) to go away before a run, and how often to retry a disturbed run.
const QUIET_WAIT: Duration = Duration::from_secs(20);
const DISTURBED_RETRIES: usize = 3;

/// Runs the workload for `plan.measure` and measures its CPU time (and the daemon's,
/// when `own` is running). A run during which another session-monitor daemon was
/// running is retried a few times.
fn measured(plan: &Plan, workload: &mut dyn Workload, own: Option<&Daemon>) -> Result<Run> {
    let own_pid = own.map(|d| d.pid);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let quiet_before = !plan.wait_quiet || wait_quiet(own_pid)?;
        let cpu_before = sys::workload_cpu_ns(workload.leaders()) + workload.extra_cpu_ns();
        let daemon_before = own.map(Daemon::cpu_ns).transpose()?.unwrap_or(0);
        let sample = workload.run(plan.measure)?;
        let cpu_after = sys::workload_cpu_ns(workload.leaders()) + workload.extra_cpu_ns();
        let daemon_after = own.map(Daemon::cpu_ns).transpose()?.unwrap_or(0);
        let disturbed = !quiet_before || !daemon::other_daemons(own_pid).is_empty();
        let run = Run {
            amount: sample.amount,
            wall_s: sample.wall.as_secs_f64(),
            cpu_s: cpu_after.saturating_sub(cpu_before) as f64 / 1e9,
            daemon_cpu_s: daemon_after.saturating_sub(daemon_before) as f64 / 1e9,
            disturbed,
        };
        if !disturbed || !plan.wait_quiet || attempt > DISTURBED_RETRIES {
            return Ok(run);
        }
        println!("    another session-monitor daemon ran during the run: repeating it");
        workload.run(plan.warmup)?;
    }
}

/// Waits (up to [`QUIET_WAIT`]) until no other session-monitor daemon runs; false if
/// one still does.
fn wait_quiet(own: Option<u32>) -> Result<bool> {
    let deadline = std::time::Instant::now() + QUIET_WAIT;
    loop {
        if daemon::other_daemons(own).is_empty() {
            return Ok(true);
        }
        if std::time::Instant::now() > deadline {
            return Ok(false);
        }
        sys::sleep(Duration::from_millis(250))?;
    }
}

/// A run with empty programs on the daemon's attach points, and no daemon.
fn floor_run(points: &[AttachPoint], plan: &Plan, workload: &mut dyn Workload) -> Result<Run> {
    let floor = Floor::attach(points)?;
    workload.run(plan.warmup)?;
    let run = measured(plan, workload, None);
    drop(floor);
    run
}

fn detached_run(plan: &Plan, workload: &mut dyn Workload) -> Result<Run> {
    workload.run(plan.warmup)?;
    measured(plan, workload, None)
}

/// Starts the daemon and waits until it tracks the workload's sessions, then warms up.
fn start_attached(
    spec: &DaemonSpec,
    policy: &Path,
    plan: &Plan,
    workload: &mut dyn Workload,
) -> Result<(Daemon, Duration)> {
    let daemon = Daemon::start(spec, policy)?;
    let sessions = daemon.wait_for_sessions(workload.leaders(), Duration::from_secs(120))?;
    workload.run(plan.warmup)?;
    Ok((daemon, sessions))
}

fn attached_run(
    spec: &DaemonSpec,
    policy: &Path,
    plan: &Plan,
    workload: &mut dyn Workload,
) -> Result<AttachedRun> {
    let (daemon, sessions) = start_attached(spec, policy, plan, workload)?;
    let before = Counters::of(&daemon.status()?);
    let run = measured(plan, workload, Some(&daemon))?;
    let rss_kib = daemon.rss_kib()?;
    let counters = Counters::of(&daemon.status()?).since(&before);
    // A whole workload may not touch any probed path (tar with the fentry backend).
    if counters.seen == 0 && workload.kind() != Kind::Whole {
        bail!(
            "the daemon's probes saw nothing during an attached run of {}: not attached?",
            workload.name()
        );
    }
    // Input is counted as matched on every keystroke (output only when a terminal
    // is new to the kernel map).
    if workload.kind() == Kind::Keystrokes && counters.matched == 0 {
        bail!(
            "the daemon's probes matched no terminal event during {}",
            workload.name()
        );
    }
    let ready_s = daemon.ready_after.as_secs_f64();
    let stop_s = daemon.stop()?.as_secs_f64();
    Ok(AttachedRun {
        run,
        rss_kib,
        counters,
        ready_s,
        sessions_s: sessions.as_secs_f64(),
        stop_s,
    })
}

/// One more attached run with `kernel.bpf_stats_enabled=1`: run time and count of
/// each of the daemon's programs.
fn program_costs(
    spec: &DaemonSpec,
    policy: &Path,
    plan: &Plan,
    workload: &mut dyn Workload,
) -> Result<(Vec<ProgCost>, f64)> {
    let (daemon, _) = start_attached(spec, policy, plan, workload)?;
    let (progs, _) = daemon.bpf_ids()?;
    if progs.is_empty() {
        bail!("the daemon holds no BPF programs");
    }
    let (before, after, sample) = with_statistics(&progs, plan, workload)?;
    daemon.stop()?;
    Ok((
        bpf::costs(&before, &after),
        sample.amount * workload.ops_per_unit(),
    ))
}

/// One measured run of `workload` with `kernel.bpf_stats_enabled=1`, and the
/// statistics of programs `ids` before and after it.
fn with_statistics(
    ids: &[u32],
    plan: &Plan,
    workload: &mut dyn Workload,
) -> Result<(ProgSamples, ProgSamples, Sample)> {
    let stats = bpf::enable_stats()?;
    let before = bpf::programs(ids)?;
    let sample = workload.run(plan.measure)?;
    let after = bpf::programs(ids)?;
    drop(stats);
    Ok((before, after, sample))
}

/// One more floor run with `kernel.bpf_stats_enabled=1`: run time and count of each
/// empty program, named by its attach point.
fn empty_program_costs(
    points: &[AttachPoint],
    plan: &Plan,
    workload: &mut dyn Workload,
) -> Result<Vec<ProgCost>> {
    let floor = Floor::attach(points)?;
    workload.run(plan.warmup)?;
    let ids: Vec<u32> = floor.programs().iter().map(|&(_, id)| id).collect();
    let (before, after, _) = with_statistics(&ids, plan, workload)?;
    // The empty programs all have one name: they are told apart by attach point.
    floor
        .programs()
        .iter()
        .map(|(point, id)| {
            let after = after
                .get(id)
                .with_context(|| format!("the empty program on {point} is gone"))?;
            Ok(ProgCost::between(&point.to_string(), before.get(id), after))
        })
        .collect()
}

/// An attached run under `perf record -a`: where the workload's CPU time goes.
fn profile(
    spec: &DaemonSpec,
    policy: &Path,
    plan: &Plan,
    workload: &mut dyn Workload,
) -> Result<Profile> {
    let (daemon, _) = start_attached(spec, policy, plan, workload)?;
    let recording = Recording::start(&spec.workdir)?;
    workload.run(plan.measure)?;
    let comm = std::fs::read_to_string("/proc/self/comm")?
        .trim()
        .to_string();
    let profile = recording.finish(&comm);
    daemon.stop()?;
    profile
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/dev/null` writes on fentry, as the VM measures them: 8 rounds, and one
    /// statistics run in which the daemon's programs ran `runs` times over a
    /// million writes.
    fn devnull(ratios: &[f64], runs: u64) -> WorkloadResult {
        WorkloadResult {
            name: "writes-devnull".into(),
            kind: Kind::UnrelatedWrites,
            description: String::new(),
            unit: "writes/s".into(),
            ops_per_unit: 1.0,
            target: Kind::UnrelatedWrites.target("fentry"),
            sessions: 0,
            detached: Vec::new(),
            attached: Vec::new(),
            floor: Vec::new(),
            ratios: ratios.to_vec(),
            wall_ratios: Vec::new(),
            floor_ratios: vec![1.0; ratios.len()],
            floor_wall_ratios: Vec::new(),
            above_floor_s: Vec::new(),
            disturbed_pairs: 0,
            programs: vec![ProgCost {
                name: "fe_tty_write".into(),
                runs,
                run_time_ns: runs * 100,
            }],
            empty_programs: Vec::new(),
            program_ops: 1e6,
            profile: None,
            profile_error: None,
        }
    }

    const NOISY: [f64; 8] = [0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 1.02, 1.05];

    #[test]
    fn an_idle_path_inside_the_noise_is_not_a_miss() {
        let w = devnull(&NOISY, 12);
        assert_eq!(w.program_runs_per_op(), Some(12e-6));
        let i = w.ratio_interval().unwrap();
        assert_eq!((i.lo, i.hi), (0.96, 1.02));
        assert_eq!(w.verdict(), Some(Verdict::WithinNoise));
    }

    #[test]
    fn a_program_on_the_path_or_a_goal_past_the_interval_is_a_miss() {
        // A program run per write: the same rounds miss.
        assert_eq!(
            devnull(&NOISY, 1_000_000).verdict(),
            Some(Verdict::Missed { floor_too: false })
        );
        // Only the largest round reaches the goal: outside the 8 rounds' interval.
        let mut low = NOISY;
        low[6] = 0.991;
        assert_eq!(
            devnull(&low, 0).verdict(),
            Some(Verdict::Missed { floor_too: false })
        );
        // No statistics run: nothing says the path was idle.
        let mut unmeasured = devnull(&NOISY, 0);
        unmeasured.programs.clear();
        assert_eq!(unmeasured.program_runs_per_op(), None);
        assert!(unmeasured.verdict().unwrap().missed());
    }
}
