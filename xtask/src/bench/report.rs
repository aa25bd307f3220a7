//! BENCHMARKS.md, one page written from the measurements only: every number in it
//! comes from the run that wrote it. The method and the remedies are prose, in
//! docs/benchmarking.md.

use std::fmt::Write as _;

use super::{
    Results, enforce, in_vm,
    runner::{Run, WorkloadResult},
    stats::{Summary, percentile},
    workloads::{Kind, Target, Verdict},
};

pub const RSS_GOAL_MIB: f64 = 64.0;
pub const DISCOVERY_GOAL_S: f64 = 2.0;
pub const ENFORCEMENT_P99_MS: f64 = 250.0;
pub const PROGRAM_NS_GOAL: f64 = 100.0;
/// Programs that ran fewer times than this in a run are left out of the per-program
/// goal: a handful of runs says nothing about the cost per event.
const MIN_RUNS_FOR_GOAL: u64 = 1000;

/// One line of the goals table.
struct Goal {
    what: String,
    goal: String,
    measured: String,
    verdict: Option<Verdict>,
}

fn mark(verdict: Option<Verdict>) -> &'static str {
    match verdict {
        Some(Verdict::Met) => "met",
        Some(Verdict::WithinNoise) => "within noise (no program ran)",
        Some(Verdict::Missed { floor_too: false }) => "**missed**",
        Some(Verdict::Missed { floor_too: true }) => "**missed** (so is the floor)",
        None => "(no goal)",
    }
}

/// `1234567.8` -> `1,234,568`; small values keep three significant digits.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.fract() == 0.0 && v.abs() < 1000.0 {
        return format!("{v:.0}");
    }
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio_spread(s: &Summary) -> String {
    format!("{:.4}–{:.4}", s.min, s.max)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// CPU nanoseconds per operation (workload, plus the daemon when attached).
fn median_of(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    Summary::of(&runs.iter().map(f).collect::<Vec<_>>()).median
}

fn program_ops(w: &WorkloadResult) -> f64 {
    w.program_ops
}

fn op_name(w: &WorkloadResult) -> String {
    match w.kind {
        Kind::Whole => unit_of(w),
        Kind::TerminalOutput => "1 KiB write".into(),
        Kind::Keystrokes if w.name.starts_with("pastes") => "paste".into(),
        Kind::Keystrokes => "keystroke".into(),
        Kind::UnrelatedWrites => "write".into(),
        Kind::UnrelatedReads => "read".into(),
        Kind::UnrelatedUdp => "datagram".into(),
        Kind::OtherSyscalls => "call".into(),
        Kind::ProcessChurn => "process".into(),
    }
}

/// The program cost a workload's operation carries: sum of ns/run × runs/op.
fn program_ns_per_op(w: &WorkloadResult) -> f64 {
    let ops = program_ops(w);
    if ops <= 0.0 {
        return 0.0;
    }
    w.programs.iter().map(|p| p.run_time_ns as f64 / ops).sum()
}

/// The largest ns/run of any program with enough runs, and where.
/// The costliest of the daemon's programs per run, in any workload.
struct WorstProgram {
    ns: f64,
    name: String,
    workload: String,
    /// Its attach point, and what an empty program there cost per run in the same
    /// workload (statistics on in both).
    hook: Option<(String, f64)>,
}

impl WorstProgram {
    /// Met below the goal; a miss says when the empty program misses it too.
    fn verdict(&self) -> Verdict {
        if self.ns < PROGRAM_NS_GOAL {
            Verdict::Met
        } else {
            Verdict::Missed {
                floor_too: self
                    .hook
                    .as_ref()
                    .is_some_and(|(_, empty)| *empty >= PROGRAM_NS_GOAL),
            }
        }
    }
}

fn worst_program(r: &Results) -> Option<WorstProgram> {
    r.workloads
        .iter()
        .flat_map(|w| {
            w.programs
                .iter()
                .filter(|p| p.runs >= MIN_RUNS_FOR_GOAL)
                .filter_map(move |p| {
                    let hook = r
                        .backend
                        .programs
                        .iter()
                        .find(|(name, _)| *name == p.name)
                        .and_then(|(_, attach)| {
                            let empty = w.empty_programs.iter().find(|e| e.name == *attach)?;
                            Some((attach.clone(), empty.ns_per_run()?))
                        });
                    Some(WorstProgram {
                        ns: p.ns_per_run()?,
                        name: p.name.clone(),
                        workload: w.name.clone(),
                        hook,
                    })
                })
        })
        .max_by(|a, b| a.ns.total_cmp(&b.ns))
}

/// The daemon's RSS without benchmark sessions: median over the attached runs of the
/// workloads that have none.
fn baseline_rss_kib(r: &Results) -> Option<f64> {
    let rss: Vec<f64> = r
        .workloads
        .iter()
        .filter(|w| w.sessions == 0)
        .flat_map(|w| w.attached.iter().map(|a| a.rss_kib as f64))
        .collect();
    (!rss.is_empty()).then(|| Summary::of(&rss).median)
}

fn total_drops(r: &Results) -> u64 {
    r.workloads.iter().map(WorkloadResult::drops).sum::<u64>()
        + r.scale.as_ref().map_or(0, |s| s.burst.dropped)
}

fn goals(r: &Results) -> Vec<Goal> {
    let mut goals = Vec::new();
    for w in &r.workloads {
        let s = w.ratio();
        goals.push(Goal {
            what: format!("`{}`: work per CPU-second, attached/detached", w.name),
            goal: w.target.map_or("-".into(), |t| match t {
                Target::AtLeast(_) => t.to_string(),
                _ => format!("{t} ({:.3})", t.threshold(w.floor_ratio().median)),
            }),
            measured: format!(
                "{:.4} (floor {:.4}; {})",
                s.median,
                w.floor_ratio().median,
                ratio_spread(&s)
            ),
            verdict: w.verdict(),
        });
    }
    let drops = total_drops(r);
    goals.push(Goal {
        what: "ring-buffer reservation failures (all attached runs and the scale burst)".into(),
        goal: "0".into(),
        measured: num(drops as f64),
        verdict: Some(Verdict::from(drops == 0)),
    });
    if let Some(sc) = &r.scale {
        let rss = mib(sc.rss_kib_discovered.max(sc.rss_kib_end));
        goals.push(Goal {
            what: format!("daemon RSS with {} sessions", num(sc.sessions as f64)),
            goal: format!("< {RSS_GOAL_MIB} MiB"),
            measured: format!("{rss:.1} MiB"),
            verdict: Some(Verdict::from(rss < RSS_GOAL_MIB)),
        });
        goals.push(Goal {
            what: format!(
                "start-up until all {} sessions are tracked",
                num(sc.sessions as f64)
            ),
            goal: format!("< {DISCOVERY_GOAL_S} s"),
            measured: format!(
                "{:.2} s ({:.2} s of CPU)",
                sc.discovered_s, sc.discovered_cpu_s
            ),
            verdict: Some(Verdict::from(sc.discovered_s < DISCOVERY_GOAL_S)),
        });
    }
    if let Some(e) = &r.enforcement {
        let p99 = e.death_p99_ms();
        let runs = match e.death_p99_of_runs_ms.as_slice() {
            [] | [_] => String::new(),
            all => format!(
                " (median of {} runs: {})",
                all.len(),
                all.iter()
                    .map(|ms| format!("{ms:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        goals.push(Goal {
            what: format!(
                "enforcement lateness p99 ({} sessions, leader death − deadline)",
                num(e.sessions as f64)
            ),
            goal: format!("< {ENFORCEMENT_P99_MS} ms"),
            measured: format!("{p99:.0} ms{runs}"),
            verdict: Some(Verdict::from(p99 < ENFORCEMENT_P99_MS)),
        });
    }
    if let Some(worst) = worst_program(r) {
        let empty = worst
            .hook
            .as_ref()
            .map(|(_, ns)| format!("; an empty program on its hook: {ns:.0} ns"))
            .unwrap_or_default();
        goals.push(Goal {
            what: "cost per event of every program (largest, in any workload)".into(),
            goal: format!("< {PROGRAM_NS_GOAL} ns"),
            measured: format!(
                "{:.0} ns (`{}` in `{}`{empty})",
                worst.ns, worst.name, worst.workload
            ),
            verdict: Some(worst.verdict()),
        });
    }
    goals
}

/// Where the raw results of a report are written: beside it, as JSON.
pub fn raw_path(report: &std::path::Path) -> std::path::PathBuf {
    report.with_extension("json")
}

/// The one-page report. How it is measured, and what would close each gap, is in
/// docs/benchmarking.md (written by hand); every number here comes from the run.
pub fn render(r: &Results, raw: &std::path::Path) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# session-monitor benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `{}` on {} in {:.0} s, backend **`{}`**. Every number comes from \
         that run; do not edit this file, run the command again (as root). Method, \
         terms and remedies: [docs/benchmarking.md](docs/benchmarking.md). Every run's \
         raw numbers: `{}`.{}\n",
        r.args_line,
        r.started_utc,
        r.took.as_secs_f64(),
        r.backend.used,
        raw.strip_prefix(crate::cmd::workspace_root())
            .unwrap_or(raw)
            .display(),
        if r.quick {
            " This is a `--quick` run: few, short runs, to check that the benchmark \
             works, not for its numbers."
        } else {
            ""
        }
    );
    render_goals(w, r);
    render_table(
        w,
        r,
        "Whole workloads",
        "What a user runs, each with the daemon detached (D), attached (A) and with \
         empty programs on the daemon's attach points (F, the floor), interleaved. \
         Ratios are work per CPU-second against the detached runs around them (median \
         of the rounds); wall-clock ratios beside them. *Above the floor*: CPU time per \
         unit of work attached less with the floor (the daemon's programs and the \
         daemon itself).",
        true,
    );
    render_table(
        w,
        r,
        "Micro workloads",
        "One kind of system call in a loop. *Above the floor* is per operation; \
         *programs* is the daemon's programs' own run time per operation \
         (`kernel.bpf_stats_enabled`, one more attached run).",
        false,
    );
    render_daemon(w, r);
    render_missed(w, r);
    render_machine(w, r);
    render_vm(w, r);
    o
}

fn render_goals(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Goals\n");
    let _ = writeln!(w, "| what | goal | measured | |\n|---|---|---|---|");
    for g in goals(r) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            g.what,
            g.goal,
            g.measured,
            mark(g.verdict)
        );
    }
    for (label, row) in vm_goal_rows(r) {
        let _ = writeln!(w, "| {label}: {}", row.trim_start_matches("| "));
    }
    let _ = writeln!(w);
}

/// CPU time per unit of work in a readable unit: ns per operation for micro
/// workloads and round trips, ms per unit of work for the other whole workloads.
fn per_op(wl: &WorkloadResult, seconds_per_unit: f64) -> String {
    if wl.kind == Kind::Whole && wl.unit != "round trips/s" {
        format!("{:.1} ms per {}", seconds_per_unit * 1e3, unit_of(wl))
    } else {
        format!(
            "{:.0} ns per {}",
            seconds_per_unit * 1e9 / wl.ops_per_unit,
            op_name(wl)
        )
    }
}

/// The programs' own run time per unit of work, in seconds.
fn program_s_per_unit(wl: &WorkloadResult) -> f64 {
    program_ns_per_op(wl) * wl.ops_per_unit / 1e9
}

/// "builds/s" -> "build"; "MiB/s" -> "MiB".
fn unit_of(wl: &WorkloadResult) -> String {
    let u = wl.unit.trim_end_matches("/s");
    u.strip_suffix("es")
        .filter(|s| s.ends_with("tus"))
        .or_else(|| u.strip_suffix('s').filter(|_| u != "MiB"))
        .unwrap_or(u)
        .to_string()
}

fn render_table(w: &mut String, r: &Results, title: &str, intro: &str, whole: bool) {
    let rows: Vec<&WorkloadResult> = r
        .workloads
        .iter()
        .filter(|wl| (wl.kind == Kind::Whole) == whole)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(w, "## {title}\n\n{intro}\n");
    let _ = writeln!(
        w,
        "| workload | detached, per CPU-s | ratio attached | ratio floor | above the floor | \
         programs | wall-clock attached / floor | rounds | goal | |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for wl in rows {
        let s = wl.ratio();
        let _ = writeln!(
            w,
            "| `{}` | {} {} | **{:.4}** ({}) | {:.4} | {} | {} | {:.4} / {:.4} | {}{} | {} | {} |",
            wl.name,
            num(median_of(&wl.detached, Run::per_cpu_second)),
            wl.unit.trim_end_matches("/s"),
            s.median,
            ratio_spread(&s),
            wl.floor_ratio().median,
            per_op(wl, wl.above_floor_s()),
            if wl.programs.is_empty() {
                "-".to_string()
            } else {
                per_op(wl, program_s_per_unit(wl))
            },
            wl.wall_ratio().median,
            wl.floor_wall_ratio().median,
            s.n,
            if wl.disturbed_pairs > 0 {
                format!(" ({} disturbed)", wl.disturbed_pairs)
            } else {
                String::new()
            },
            wl.target.map_or("-".into(), |t| t.to_string()),
            mark(wl.verdict())
        );
    }
    let _ = writeln!(w, "\nWhat each runs:\n");
    for wl in r
        .workloads
        .iter()
        .filter(|wl| (wl.kind == Kind::Whole) == whole)
    {
        let _ = writeln!(w, "- `{}`: {}.", wl.name, wl.description);
    }
    let _ = writeln!(w);
}

fn render_daemon(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## The daemon\n");
    let cpu: Vec<f64> = r
        .workloads
        .iter()
        .flat_map(|wl| wl.attached.iter())
        .map(|a| a.run.daemon_cpu_s / a.run.wall_s * 100.0)
        .collect();
    let cpu = Summary::of(&cpu);
    let _ = writeln!(
        w,
        "- CPU during the attached runs: median {:.2} %, max {:.2} % of a CPU; \
         RSS without sessions {}; start to first answer {:.2} s.",
        cpu.median,
        cpu.max,
        baseline_rss_kib(r).map_or("-".into(), |k| format!("{:.1} MiB", k / 1024.0)),
        r.backend.ready_s
    );
    if let Some(s) = &r.scale {
        let _ = writeln!(
            w,
            "- {} pty sessions: all tracked {:.2} s after start ({:.2} s of the daemon's CPU), \
             RSS {:.1} MiB, idle CPU {:.2} % of a CPU, `sessions --json` {:.2} s, one \
             keystroke in each: {} events sent, {} received, {} ring-buffer failures, {:.3} s \
             of the daemon's CPU to take them; kernel maps {:.2} MiB.",
            num(s.sessions as f64),
            s.discovered_s,
            s.discovered_cpu_s,
            mib(s.rss_kib_discovered.max(s.rss_kib_end)),
            s.idle_cpu_share * 100.0,
            s.list_s,
            num(s.burst.sent as f64),
            num(s.burst.events_received as f64),
            num(s.burst.dropped as f64),
            s.burst_cpu_s,
            s.map_memlock_bytes() as f64 / 1048576.0
        );
    }
    if let Some(e) = &r.enforcement {
        let line = |v: &[f64]| {
            if v.is_empty() {
                return "not measured".to_string();
            }
            let v = sorted(v);
            format!(
                "p50 {:.0} ms, p99 {:.0} ms",
                percentile(&v, 50.0),
                percentile(&v, 99.0)
            )
        };
        let _ = writeln!(
            w,
            "- Enforcement, {} sessions on a {} s idle timeout{}: leader dead after the \
             deadline {}; session known to the daemon after its keystroke {}; warning \
             written after it was due {}; end decided late {} (to 0.1 s); decision to \
             processes gone {}.",
            num(e.sessions as f64),
            enforce::IDLE_TIMEOUT_S,
            match e.death_p99_of_runs_ms.len() {
                0 | 1 => String::new(),
                n => format!(" (the run with the median p99 of {n})"),
            },
            line(&e.death_late_ms),
            line(&e.known_after_ms),
            line(&e.warned_late_ms),
            line(&e.decided_late_ms),
            line(&e.took_ms)
        );
    }
    let _ = writeln!(w);
}

fn render_missed(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## What was missed, and why\n");
    let mut any = false;
    let missed = r.workloads.iter().filter_map(|wl| match wl.verdict()? {
        Verdict::Missed { floor_too } => Some((wl, floor_too)),
        _ => None,
    });
    for (wl, floor_too) in missed {
        any = true;
        let daemon_s = median_of(&wl.attached_runs(), |run| run.daemon_cpu_s / run.amount);
        let programs: Vec<String> = wl
            .programs
            .iter()
            .filter(|p| p.runs as f64 >= 0.01 * wl.program_ops)
            .map(|p| {
                format!(
                    "`{}` {:.2} × {:.0} ns",
                    p.name,
                    p.runs as f64 / wl.program_ops.max(1.0),
                    p.ns_per_run().unwrap_or(0.0)
                )
            })
            .collect();
        let _ = writeln!(
            w,
            "- `{}`: {:.4} against the floor's {:.4} (goal {}). Above the floor: {}, of \
             which the daemon's own CPU {} and its programs' run time {} (runs per {} × \
             ns per run: {}); the rest is noise or the kernel's work around the \
             programs.{}{}",
            wl.name,
            wl.ratio().median,
            wl.floor_ratio().median,
            wl.target.map_or("-".into(), |t| t.to_string()),
            per_op(wl, wl.above_floor_s()),
            per_op(wl, daemon_s),
            per_op(wl, program_s_per_unit(wl)),
            op_name(wl),
            if programs.is_empty() {
                "none ran".into()
            } else {
                programs.join(", ")
            },
            wl.profile
                .as_ref()
                .map(|p| format!(
                    " Profile: tracing {:.1} % of samples; top {}.",
                    p.tracing_share,
                    p.top
                        .iter()
                        .take(3)
                        .map(|(pct, sym)| format!("`{sym}` {pct:.1} %"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .unwrap_or_default(),
            if floor_too {
                " The floor is below the goal too: on this kernel the hooks alone, \
                 with empty programs, miss it."
            } else {
                ""
            }
        );
    }
    for wl in r
        .workloads
        .iter()
        .filter(|wl| wl.verdict() == Some(Verdict::WithinNoise))
    {
        // A verdict of noise is only given with an interval.
        let Some(interval) = wl.ratio_interval() else {
            continue;
        };
        any = true;
        let _ = writeln!(
            w,
            "- `{}`, within noise rather than missed: {:.4} against the goal {}, but none \
             of the daemon's programs ran ({:.4} runs per {}) and the median's {:.0} % \
             interval, {:.4}–{:.4} over {} rounds, holds the goal.",
            wl.name,
            wl.ratio().median,
            wl.target.map_or("-".into(), |t| t.to_string()),
            wl.program_runs_per_op().unwrap_or(f64::NAN),
            op_name(wl),
            interval.coverage * 100.0,
            interval.lo,
            interval.hi,
            wl.ratios.len()
        );
    }
    let drops = total_drops(r);
    if drops > 0 {
        any = true;
        let _ = writeln!(
            w,
            "- {drops} ring-buffer reservation failures: a burst of first input into more \
             terminals than the ring buffer holds before the daemon reads it."
        );
    }
    if let Some(s) = &r.scale {
        if mib(s.rss_kib_discovered.max(s.rss_kib_end)) >= RSS_GOAL_MIB {
            any = true;
            let _ = writeln!(
                w,
                "- RSS with {} sessions: about {:.1} KiB per session.",
                num(s.sessions as f64),
                s.rss_kib_discovered as f64 / s.sessions.max(1) as f64
            );
        }
        if s.discovered_s >= DISCOVERY_GOAL_S {
            any = true;
            let _ = writeln!(
                w,
                "- Start-up discovery: {:.0} µs per session{}.",
                (s.ready_s - r.backend.ready_s).max(0.0) / s.sessions.max(1) as f64 * 1e6,
                s.discovery_syscalls
                    .as_ref()
                    .map(|c| format!(
                        "; system calls per session: {}",
                        c.per(s.sessions as f64, 6)
                    ))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(e) = &r.enforcement {
        let p99 = e.death_p99_ms();
        if p99 >= ENFORCEMENT_P99_MS {
            any = true;
            let _ = writeln!(
                w,
                "- Enforcement p99 {p99:.0} ms: warnings written late by {:.0} ms (p99; \
                 the end waits the whole warning time after it), end decided late by \
                 {:.0} ms (p99), processes gone {:.0} ms (p99) after the decision{}.",
                percentile(&sorted(&e.warned_late_ms), 99.0),
                percentile(&sorted(&e.decided_late_ms), 99.0),
                percentile(&sorted(&e.took_ms), 99.0),
                r.enforcement_syscalls
                    .as_ref()
                    .map(|c| format!(
                        "; daemon system calls per ended session: {}",
                        c.per(e.sessions as f64, 6)
                    ))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(worst) = worst_program(r)
        && worst.verdict().missed()
    {
        any = true;
        let hook = match &worst.hook {
            Some((attach, empty)) => format!(
                " An empty program on its hook (`{attach}`) takes {empty:.0} ns per run \
                 there{}: statistics on, their two clock reads are in both.",
                if *empty >= PROGRAM_NS_GOAL {
                    ", itself above the goal"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        let _ = writeln!(
            w,
            "- `{}` takes {:.0} ns per run in `{}`.{hook}",
            worst.name, worst.ns, worst.workload
        );
    }
    if !any {
        let _ = writeln!(w, "Nothing: every goal was met.");
    }
    let _ = writeln!(
        w,
        "\nWhat would close each gap: [docs/benchmarking.md](docs/benchmarking.md#remedies).\n"
    );
}

fn render_machine(w: &mut String, r: &Results) {
    let m = &r.machine;
    let b = &r.backend;
    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(
        w,
        "{} ({} CPUs{}), {:.1} GiB; kernel {}; {}; commit {}. Other processes used \
         {:.2} CPUs on average during the run{}. Backend requested `{}`, used `{}`{}. \
         Attached (and, empty, the floor): {}.{}\n",
        m.cpu,
        m.cpus,
        if m.virtualized { ", virtual" } else { "" },
        m.memory_gib,
        m.kernel,
        m.os,
        m.commit,
        r.other_load,
        if r.other_daemons > 0 {
            format!("; {} other session-monitor daemon(s) ran", r.other_daemons)
        } else {
            String::new()
        },
        b.requested,
        b.used,
        b.fallback_reason
            .as_ref()
            .map(|r| format!(" (fentry refused: `{}`)", r.replace('`', "'")))
            .unwrap_or_default(),
        b.programs
            .iter()
            .map(|(_, attach)| format!("`{attach}`"))
            .collect::<Vec<_>>()
            .join(", "),
        b.standby
            .iter()
            .map(|(attach, when)| format!(
                " On standby, not attached in these workloads (attached {when}): `{attach}`."
            ))
            .collect::<String>()
    );
}

fn vm_goal_rows(r: &Results) -> Vec<(String, String)> {
    let Some(vm) = &r.vm else {
        return Vec::new();
    };
    let kernel = vm.kernel.as_deref().unwrap_or(&vm.asked);
    vm.runs
        .iter()
        .filter_map(|run| Some((run, run.report.as_ref().ok()?)))
        .flat_map(|(run, report)| {
            in_vm::goal_rows(report)
                .into_iter()
                .map(move |row| (format!("VM ({kernel}), {}", run.backend), row))
        })
        .collect()
}

fn render_vm(w: &mut String, r: &Results) {
    let Some(vm) = &r.vm else {
        return;
    };
    let kernel = vm.kernel.as_deref().unwrap_or(&vm.asked);
    let _ = writeln!(
        w,
        "## The fentry backend, in a VM\n\nDebian's kernel `{kernel}` under QEMU software \
         emulation (`cargo xtask vm-test`'s harness), both backends, micro workloads \
         only: compare the VM's ratios with each other, not with the host's.\n"
    );
    if let Some(problem) = &vm.problem {
        let _ = writeln!(w, "The VM could not be prepared: {problem}\n");
        return;
    }
    for run in &vm.runs {
        let _ = writeln!(
            w,
            "### With the {} backend ({:.0} s)\n",
            run.backend,
            run.took.as_secs_f64()
        );
        match &run.report {
            Ok(report) => {
                let _ = writeln!(w, "{}", in_vm::embedded(&in_vm::tables(report)));
            }
            Err(err) => {
                let _ = writeln!(w, "No numbers: {err} (logs in `{}`).\n", run.dir.display());
            }
        }
    }
}

/// A few lines for the terminal at the end of the run.
pub fn summary(r: &Results) -> String {
    let mut o = String::from("\nGoals:\n");
    for g in goals(r) {
        let _ = writeln!(
            o,
            "  {:<9} {} — goal {}, measured {}",
            match g.verdict {
                Some(Verdict::Met) => "met",
                Some(Verdict::WithinNoise) => "noise",
                Some(Verdict::Missed { .. }) => "MISSED",
                None => "-",
            },
            g.what.replace('`', ""),
            g.goal,
            g.measured
        );
    }
    for (label, row) in vm_goal_rows(r) {
        let _ = writeln!(
            o,
            "  {label}: {}",
            row.trim_matches('|').trim().replace('`', "")
        );
    }
    if let Some(problem) = r.vm.as_ref().and_then(|vm| vm.problem.as_ref()) {
        let _ = writeln!(o, "  VM part not run: {problem}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(1234567.8), "1,234,568");
        assert_eq!(num(999.4), "999");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(num(-1234.0), "-1,234");
        assert_eq!(num(f64::NAN), "-");
        assert_eq!(num(0.0), "0");
    }

    #[test]
    fn a_costly_program_misses_with_the_floor_only_when_an_empty_one_does() {
        let worst = |ns: f64, empty: Option<f64>| WorstProgram {
            ns,
            name: "process_fork".into(),
            workload: "process-churn".into(),
            hook: empty.map(|e| ("tp_btf/sched_process_fork".into(), e)),
        };
        assert_eq!(worst(99.0, Some(120.0)).verdict(), Verdict::Met);
        assert_eq!(
            worst(180.0, Some(60.0)).verdict(),
            Verdict::Missed { floor_too: false }
        );
        assert_eq!(
            worst(180.0, Some(110.0)).verdict(),
            Verdict::Missed { floor_too: true }
        );
        assert_eq!(
            worst(180.0, None).verdict(),
            Verdict::Missed { floor_too: false }
        );
    }
}
