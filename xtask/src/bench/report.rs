//! BENCHMARKS.md, written from the measurements only: every number in it comes from
//! the run that wrote it.

use std::fmt::Write as _;

use super::{
    Results,
    bpf::ProgCost,
    enforce::{self, EnforcementResult},
    in_vm,
    profile::Profile,
    runner::{Run, WorkloadResult},
    scale::ScaleResult,
    stats::{Summary, percentile},
    workloads::Kind,
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
    met: Option<bool>,
}

fn mark(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
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
fn cpu_ns_per_op(w: &WorkloadResult, run: &Run) -> f64 {
    (run.cpu_s + run.daemon_cpu_s) * 1e9 / (run.amount * w.ops_per_unit)
}

fn median_of(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    Summary::of(&runs.iter().map(f).collect::<Vec<_>>()).median
}

fn program_ops(w: &WorkloadResult) -> f64 {
    w.program_ops
}

fn op_name(w: &WorkloadResult) -> &'static str {
    match w.kind {
        Kind::TerminalOutput => "1 KiB write",
        Kind::Keystrokes => "keystroke",
        Kind::UnrelatedWrites => "write",
        Kind::UnrelatedUdp => "datagram",
        Kind::ProcessChurn => "process",
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
fn worst_program(r: &Results) -> Option<(f64, String, String)> {
    r.workloads
        .iter()
        .flat_map(|w| {
            w.programs
                .iter()
                .filter(|p| p.runs >= MIN_RUNS_FOR_GOAL)
                .filter_map(move |p| Some((p.ns_per_run()?, p.name.clone(), w.name.clone())))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
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
            goal: w.target.map_or("-".into(), |t| format!("≥ {t}")),
            measured: format!("{:.4} (median; {})", s.median, ratio_spread(&s)),
            met: w.met(),
        });
    }
    let drops = total_drops(r);
    goals.push(Goal {
        what: "ring-buffer reservation failures (all attached runs and the scale burst)".into(),
        goal: "0".into(),
        measured: num(drops as f64),
        met: Some(drops == 0),
    });
    if let Some(sc) = &r.scale {
        let rss = mib(sc.rss_kib_discovered.max(sc.rss_kib_end));
        goals.push(Goal {
            what: format!("daemon RSS with {} sessions", num(sc.sessions as f64)),
            goal: format!("< {RSS_GOAL_MIB} MiB"),
            measured: format!("{rss:.1} MiB"),
            met: Some(rss < RSS_GOAL_MIB),
        });
        goals.push(Goal {
            what: format!(
                "start-up until all {} sessions are tracked",
                num(sc.sessions as f64)
            ),
            goal: format!("< {DISCOVERY_GOAL_S} s"),
            measured: format!("{:.2} s", sc.discovered_s),
            met: Some(sc.discovered_s < DISCOVERY_GOAL_S),
        });
    }
    if let Some(e) = &r.enforcement {
        let p99 = percentile(&sorted(&e.death_late_ms), 99.0);
        goals.push(Goal {
            what: format!(
                "enforcement lateness p99 ({} sessions, leader death − deadline)",
                num(e.sessions as f64)
            ),
            goal: format!("< {ENFORCEMENT_P99_MS} ms"),
            measured: format!("{p99:.0} ms"),
            met: Some(p99 < ENFORCEMENT_P99_MS),
        });
    }
    if let Some((ns, name, workload)) = worst_program(r) {
        goals.push(Goal {
            what: "cost per event of every program (largest, in any workload)".into(),
            goal: format!("< {PROGRAM_NS_GOAL} ns"),
            measured: format!("{ns:.0} ns (`{name}` in `{workload}`)"),
            met: Some(ns < PROGRAM_NS_GOAL),
        });
    }
    goals
}

pub fn render(r: &Results) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# session-monitor benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `{}` on {} in {:.0} s. Every number below comes from that run; \
         to update them, run the command again (as root) — do not edit this file.{}\n",
        r.args_line,
        r.started_utc,
        r.took.as_secs_f64(),
        if r.quick {
            " This is a `--quick` run: few, short runs, for checking that the benchmark \
             works, not for its numbers."
        } else {
            ""
        }
    );
    render_goals(w, r);
    render_machine(w, r);
    render_method(w, r);
    render_throughput(w, r);
    render_daemon_cost(w, r);
    render_programs(w, r);
    render_scale(w, r);
    render_enforcement(w, r);
    render_missed(w, r);
    render_vm(w, r);
    render_raw(w, r);
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
            mark(g.met)
        );
    }
    for (label, row) in vm_goal_rows(r) {
        let _ = writeln!(w, "| {label}: {}", row.trim_start_matches("| "));
    }
    let _ = writeln!(
        w,
        "\nGoals are what we aim for, not pass/fail gates: a miss is explained under \
         [Missed goals](#missed-goals) with what would close it.\n"
    );
}

fn render_machine(w: &mut String, r: &Results) {
    let m = &r.machine;
    let b = &r.backend;
    let _ = writeln!(w, "## Machine and backend\n");
    let _ = writeln!(
        w,
        "- CPU: {} — {} CPUs{}",
        m.cpu,
        m.cpus,
        if m.virtualized {
            ", virtual machine"
        } else {
            ""
        }
    );
    let _ = writeln!(w, "- Memory: {:.1} GiB", m.memory_gib);
    let _ = writeln!(w, "- Kernel: {} (`{}`)", m.kernel, m.kernel_version);
    let _ = writeln!(w, "- OS: {}", m.os);
    let _ = writeln!(w, "- session-monitor: commit {}", m.commit);
    let _ = writeln!(
        w,
        "- Other load during the run: processes other than the benchmark and its daemon \
         used {:.2} CPUs on average{}",
        r.other_load,
        if r.other_daemons > 0 {
            format!(
                "; {} other session-monitor daemon(s) ran at some point (their probes run \
                 in both kinds of runs and dilute the difference)",
                r.other_daemons
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        w,
        "- Backend: requested `{}`, used **`{}`**",
        b.requested, b.used
    );
    if b.used != "fentry" {
        let _ = writeln!(
            w,
            "- The fentry backend cannot load on this kernel{}. {} The goals for the \
             tracepoint backend apply here.",
            b.fallback_reason
                .as_ref()
                .map(|r| format!(": `{}`", r.replace('`', "'")))
                .unwrap_or_default(),
            if r.vm.is_some() {
                "It is measured in a VM booting a stock kernel instead: see \
                 [The fentry backend, in a VM](#the-fentry-backend-in-a-vm)."
            } else {
                "Its numbers are not measured in this run (`--no-vm`, or `--quick` \
                 without `--vm`)."
            }
        );
    }
    let _ = writeln!(w, "- Programs attached:");
    for (name, attach) in &b.programs {
        let _ = writeln!(w, "  - `{name}` on `{attach}`");
    }
    let _ = writeln!(w);
}

fn render_method(w: &mut String, r: &Results) {
    let p = &r.sizes.plan;
    let _ = writeln!(w, "## Method\n");
    let _ = writeln!(w, "Command (as root, in the repository):\n");
    let _ = writeln!(w, "```\n{}\n```\n", r.args_line);
    let _ = writeln!(
        w,
        "It sets up and builds like the other xtask commands (release build of the \
         daemon), then starts the daemon for every attached run as:\n"
    );
    let _ = writeln!(w, "```\n{}\n```\n", r.daemon_command);
    let _ = writeln!(
        w,
        "`$WORKDIR` is a scratch directory, removed at the end. `POLICY` is, for every \
         throughput workload and the scale test:\n"
    );
    let _ = writeln!(w, "```toml\n{}```\n", r.none_policy);
    let _ = writeln!(
        w,
        "Each workload runs in the benchmark process itself (an optimised build; plus \
         the session leaders it needs), with the same descriptors and children for all \
         its runs. Per workload: {} attached runs between {} detached ones (`D A D A … \
         D`), {:.1} s each, each after a {:.1} s warm-up. An attached run starts the \
         daemon, waits until it tracks every session of the workload, warms up, \
         measures, and stops the daemon (so its programs are detached again). Nothing \
         is pinned to a CPU.\n",
        p.pairs,
        p.pairs + 1,
        p.measure.as_secs_f64(),
        p.warmup.as_secs_f64(),
    );
    let _ = writeln!(
        w,
        "**What is compared.** This machine is shared: other processes used {:.2} CPUs \
         on average during the run (see above), so elapsed-time throughput moves by tens \
         of percent between neighbouring runs whatever the daemon does. The ratios that \
         the goals judge are therefore of **work per CPU-second**: the workload's work \
         divided by the CPU time it used (this process, its session leaders and reaped \
         children; `CLOCK_PROCESS_CPUTIME_ID`, `/proc/PID/schedstat`, `getrusage`) plus, \
         when attached, the daemon's CPU time over the same window (all its threads, \
         `/proc/PID/task/*/schedstat`: the utime + stime of `/proc/PID/stat` at \
         nanosecond resolution). That is the cost the daemon adds, in the workload's \
         own system calls (where the probes run) and in the daemon, and it does not \
         move when another process takes the CPU. Work done for the workload in other \
         contexts (softirqs, the tty layer's kworkers) is not counted, with or without \
         the daemon. The elapsed-time (wall-clock) ratio is reported beside it. Each \
         attached run's ratio is against the mean of the detached runs just before and \
         after it; the tables give the median, the range (min–max) and the \
         interquartile range of those ratios. A run during which another \
         session-monitor daemon was running (tests on the same machine) is repeated, \
         and a pair that stays disturbed is left out of the ratios.\n",
        r.other_load
    );
    let _ = writeln!(
        w,
        "RSS is `VmRSS` at the end of the measured window. Ring-buffer failures are the \
         probes' `dropped` counters (`status --json`). Per-program cost comes from one \
         more attached run with `kernel.bpf_stats_enabled=1` (`bpftool prog show \
         --json`, run_time_ns / run_cnt of the daemon's programs, found through its \
         `/proc/PID/fdinfo`); the setting is off during the ratio runs, since it adds \
         two clock reads to every program run. Workloads that miss their goal are \
         profiled in one more attached run with `perf record -a` (software clock \
         sampling; `bpftool prog profile` needs fentry, which this kernel refuses); \
         the daemon's own system calls are counted in the kernel with `perf stat` on \
         `raw_syscalls:sys_enter` filtered by call number (the per-call \
         `syscalls:sys_enter_read`/`_write` events count nothing while the daemon runs: \
         its programs return 0, which makes the kernel drop those events for every \
         perf user). `kernel.pty.max` is raised from {} to {} and RLIMIT_NOFILE raised for the \
         scale test, and both are put back.\n",
        r.pty_max.0, r.pty_max.1
    );
    let _ = writeln!(w, "Workloads:\n");
    for wl in &r.workloads {
        let _ = writeln!(w, "- `{}`: {}.", wl.name, wl.description);
    }
    let _ = writeln!(w);
}

fn render_throughput(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Throughput with the daemon attached\n");
    let _ = writeln!(
        w,
        "Work per CPU-second is the workload's work divided by the CPU time of the \
         workload and, when attached, of the daemon over the same window; its ratio is \
         what the goals judge. The wall-clock ratio is throughput over elapsed time, \
         which on this shared machine also moves with everything else that runs (see \
         [Method](#method)).\n"
    );
    let _ = writeln!(
        w,
        "| workload | unit | detached, per CPU-s | attached, per CPU-s | ratio (median) | \
         min–max | IQR | pairs | wall-clock ratio (median, min–max) | goal | |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for wl in &r.workloads {
        let s = wl.ratio();
        let wall = wl.wall_ratio();
        let _ = writeln!(
            w,
            "| `{}` | {} | {} | {} | **{:.4}** | {} | {:.4}–{:.4} | {} | {:.4} ({}) | {} | {} |",
            wl.name,
            wl.unit,
            num(median_of(&wl.detached, Run::per_cpu_second)),
            num(median_of(&wl.attached_runs(), Run::per_cpu_second)),
            s.median,
            ratio_spread(&s),
            s.q1,
            s.q3,
            if wl.disturbed_pairs > 0 {
                format!("{} ({} disturbed)", s.n, wl.disturbed_pairs)
            } else {
                s.n.to_string()
            },
            wall.median,
            ratio_spread(&wall),
            wl.target.map_or("-".into(), |t| format!("≥ {t}")),
            mark(wl.met())
        );
    }
    let _ = writeln!(w);
}

fn render_daemon_cost(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## What the daemon itself used\n");
    let _ = writeln!(
        w,
        "Over the attached runs of each workload: the daemon's CPU time as a share of one \
         CPU (median, max), its largest RSS, the kernel events it was sent and received, \
         reservation failures, and how long it took to start (spawn to first answer, \
         which includes start-up discovery), to track the workload's sessions, and to \
         stop.\n"
    );
    let _ = writeln!(
        w,
        "| workload | sessions | daemon CPU median | max | RSS max (MiB) | events sent | \
         received | drops | ready (s) | sessions tracked (s) | stop (s) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for wl in &r.workloads {
        let cpu: Vec<f64> = wl
            .attached
            .iter()
            .map(|a| a.run.daemon_cpu_s / a.run.wall_s * 100.0)
            .collect();
        let cpu = Summary::of(&cpu);
        let med = |f: fn(&super::runner::AttachedRun) -> f64| {
            Summary::of(&wl.attached.iter().map(f).collect::<Vec<_>>()).median
        };
        let _ = writeln!(
            w,
            "| `{}` | {} | {:.2} % | {:.2} % | {:.1} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            wl.name,
            wl.sessions,
            cpu.median,
            cpu.max,
            mib(wl.attached.iter().map(|a| a.rss_kib).max().unwrap_or(0)),
            num(wl.attached.iter().map(|a| a.counters.sent).sum::<u64>() as f64),
            num(wl
                .attached
                .iter()
                .map(|a| a.counters.events_received)
                .sum::<u64>() as f64),
            wl.drops(),
            med(|a| a.ready_s),
            med(|a| a.sessions_s),
            med(|a| a.stop_s),
        );
    }
    let _ = writeln!(w);
}

fn render_programs(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Cost per program\n");
    let _ = writeln!(
        w,
        "Backend `{}`. Each cell: mean run time per program run in ns (from \
         `run_time_ns / run_cnt`), and in brackets how many times the program ran per \
         workload operation (runs of the programs anywhere on the machine during the \
         run, over the workload's operations). `-`: the program did not run. The \
         per-run time does not \
         include the kernel's cost of getting to the program (for syscall tracepoints: \
         the slow system-call entry path and the perf record built for every enabled \
         system call); the throughput ratios do.\n",
        r.backend.used
    );
    let mut names: Vec<String> = r
        .workloads
        .iter()
        .flat_map(|wl| wl.programs.iter().map(|p| p.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    let _ = write!(w, "| program |");
    for wl in &r.workloads {
        let _ = write!(w, " `{}` |", wl.name);
    }
    let _ = write!(w, "\n|---|");
    for _ in &r.workloads {
        let _ = write!(w, "---:|");
    }
    let _ = writeln!(w);
    for name in &names {
        let _ = write!(w, "| `{name}` |");
        for wl in &r.workloads {
            let cell = wl
                .programs
                .iter()
                .find(|p| &p.name == name)
                .and_then(|p: &ProgCost| {
                    let ns = p.ns_per_run()?;
                    let per_op = p.runs as f64 / program_ops(wl).max(1.0);
                    Some(format!("{ns:.0} ns ({per_op:.2}/op)"))
                })
                .unwrap_or_else(|| "-".into());
            let _ = write!(w, " {cell} |");
        }
        let _ = writeln!(w);
    }
    let _ = write!(w, "| **all programs, ns per operation** |");
    for wl in &r.workloads {
        let _ = write!(
            w,
            " **{:.0} ns** / {} |",
            program_ns_per_op(wl),
            op_name(wl)
        );
    }
    let _ = writeln!(w, "\n");
}

fn render_scale(w: &mut String, r: &Results) {
    let Some(s) = &r.scale else {
        return;
    };
    let baseline = r.backend.ready_s;
    let _ = writeln!(
        w,
        "## Scale: {} concurrent pty sessions\n",
        num(s.sessions as f64)
    );
    let _ = writeln!(
        w,
        "{} ptys, each with a sleeping session leader (setsid, slave as controlling \
         terminal), all created before the daemon starts ({:.2} s to create). The daemon \
         then has to discover them from /proc.\n",
        num(s.sessions as f64),
        s.create_s
    );
    let _ = writeln!(w, "| measure | value | goal |\n|---|---:|---|");
    let rows: Vec<(String, String, String)> = vec![
        (
            "spawn to first answer (start-up discovery included)".into(),
            format!("{:.2} s", s.ready_s),
            String::new(),
        ),
        (
            "same, with no benchmark sessions (for comparison)".into(),
            format!("{baseline:.2} s"),
            String::new(),
        ),
        (
            "spawn to every session listed by `sessions --json`".into(),
            format!("{:.2} s", s.discovered_s),
            format!(
                "< {DISCOVERY_GOAL_S} s: {}",
                mark(Some(s.discovered_s < DISCOVERY_GOAL_S))
            ),
        ),
        (
            "discovery per session ((ready − empty ready) / sessions)".into(),
            format!(
                "{:.0} µs",
                (s.ready_s - baseline).max(0.0) / s.sessions.max(1) as f64 * 1e6
            ),
            String::new(),
        ),
        (
            "daemon RSS after discovery".into(),
            format!("{:.1} MiB", mib(s.rss_kib_discovered)),
            format!(
                "< {RSS_GOAL_MIB} MiB: {}",
                mark(Some(mib(s.rss_kib_discovered) < RSS_GOAL_MIB))
            ),
        ),
        (
            "daemon RSS at the end".into(),
            format!("{:.1} MiB", mib(s.rss_kib_end)),
            String::new(),
        ),
        (
            "daemon RSS with no sessions (median of the session-less workloads' runs)".into(),
            baseline_rss_kib(r).map_or("-".into(), |k| format!("{:.1} MiB", k / 1024.0)),
            String::new(),
        ),
        (
            "RSS per session ((after discovery − no sessions) / sessions)".into(),
            baseline_rss_kib(r).map_or("-".into(), |k| {
                format!(
                    "{:.2} KiB",
                    (s.rss_kib_discovered as f64 - k) / s.sessions.max(1) as f64
                )
            }),
            String::new(),
        ),
        (
            format!("daemon CPU while all idle ({:.0} s)", s.idle_window_s),
            format!("{:.2} % of a CPU", s.idle_cpu_share * 100.0),
            String::new(),
        ),
        (
            "`sessions --json` with all of them".into(),
            format!("{:.2} s", s.list_s),
            String::new(),
        ),
        (
            "one keystroke into every pty: time to write them".into(),
            format!("{:.3} s", s.burst_s),
            String::new(),
        ),
        (
            "… events sent / received / ring-buffer failures".into(),
            format!(
                "{} / {} / {}",
                num(s.burst.sent as f64),
                num(s.burst.events_received as f64),
                num(s.burst.dropped as f64)
            ),
            format!("0 failures: {}", mark(Some(s.burst.dropped == 0))),
        ),
        (
            "kernel map memory (sum of `bytes_memlock`)".into(),
            format!("{:.2} MiB", s.map_memlock_bytes() as f64 / 1048576.0),
            String::new(),
        ),
        (
            "daemon stop (SIGTERM to exit)".into(),
            format!("{:.2} s", s.stop_s),
            String::new(),
        ),
    ];
    for (a, b, c) in rows {
        let _ = writeln!(w, "| {a} | {b} | {c} |");
    }
    let _ = writeln!(
        w,
        "\nThe daemon's maps (`bpftool map show`); hash maps are preallocated, so their \
         memory does not depend on how many sessions there are:\n"
    );
    let _ = writeln!(
        w,
        "| map | type | max entries | key + value bytes | max entries × (key + value) | \
         kernel's account (`bytes_memlock`) |\n|---|---|---:|---:|---:|---:|"
    );
    for m in &s.maps {
        let _ = writeln!(
            w,
            "| `{}` | {} | {} | {} | {:.2} MiB | {:.2} MiB |",
            m.name,
            m.kind,
            num(m.max_entries as f64),
            m.key_bytes + m.value_bytes,
            (m.max_entries * (m.key_bytes + m.value_bytes)) as f64 / 1048576.0,
            m.memlock_bytes as f64 / 1048576.0
        );
    }
    let _ = writeln!(w);
    if let Some((counts, seconds)) = &s.idle_syscalls {
        let _ = writeln!(
            w,
            "While they idle, the daemon makes {} system calls per second, {:.1} per \
             session per second (counted in the kernel with `perf stat` over \
             {seconds:.0} s); per session per second: {}. They come from its periodic \
             check (every 2 s) of every session against /proc and the kernel maps.\n",
            num(counts.total() as f64 / seconds),
            counts.total() as f64 / seconds / s.sessions.max(1) as f64,
            counts.per(seconds * s.sessions as f64, 8)
        );
    }
}

fn render_enforcement(w: &mut String, r: &Results) {
    let Some(e) = &r.enforcement else {
        return;
    };
    let _ = writeln!(
        w,
        "## Enforcement latency: {} sessions on a {} s idle timeout\n",
        num(e.sessions as f64),
        enforce::IDLE_TIMEOUT_S
    );
    let _ = writeln!(
        w,
        "With the daemon running under the policy below, the benchmark creates {} ptys \
         whose sleeping session leaders run as the test user `{}` (created for the run \
         and removed after it), and writes one keystroke into each. Each session's \
         deadline is its keystroke + {} s. The leaders' deaths are timed with pidfds; the \
         decision comes from the audit log's `session_end` records (`idle_seconds` when \
         the end was decided, minus the timeout). {} warnings were recorded; {} sessions \
         ended for idleness; keystroke to the last death took {:.2} s.\n",
        num(e.sessions as f64),
        enforce::USER,
        enforce::IDLE_TIMEOUT_S,
        e.warnings,
        e.idle_ends,
        e.total_s
    );
    let _ = writeln!(w, "```toml\n{}```\n", enforce::policy_text());
    let _ = writeln!(
        w,
        "| ms after the deadline | min | p50 | p99 | max |\n|---|---:|---:|---:|---:|"
    );
    for (name, values) in [
        ("leader died (pidfd)", &e.death_late_ms),
        (
            "end decided (audit `idle_seconds` − timeout)",
            &e.decided_late_ms,
        ),
        ("decision to processes gone (audit `took_ms`)", &e.took_ms),
    ] {
        let v = sorted(values);
        let _ = writeln!(
            w,
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
            v.first().copied().unwrap_or(f64::NAN),
            percentile(&v, 50.0),
            percentile(&v, 99.0),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    let p99 = percentile(&sorted(&e.death_late_ms), 99.0);
    let _ = writeln!(
        w,
        "\nGoal: p99 < {ENFORCEMENT_P99_MS} ms — {}.\n",
        mark(Some(p99 < ENFORCEMENT_P99_MS))
    );
    if let Some(c) = &r.enforcement_syscalls {
        let _ = writeln!(
            w,
            "System calls of the daemon per ended session (counted with `perf stat` in a \
             second run, from the keystrokes to the last death; {} processes on the \
             machine): {} in all; {}.\n",
            num(e.processes as f64),
            num(c.total() as f64 / e.sessions.max(1) as f64),
            c.per(e.sessions as f64, 8)
        );
    }
}

fn render_profile(w: &mut String, p: &Profile) {
    let _ = writeln!(w, "| share | symbol |\n|---:|---|");
    for (pct, sym) in p.top.iter().take(12) {
        let _ = writeln!(w, "| {pct:.1} % | `{sym}` |");
    }
    let _ = writeln!(
        w,
        "\nBPF programs, helpers and tracepoint glue: {:.1} % of these samples ({}). \
         Software-clock sampling charges time spent with interrupts disabled to where \
         they are enabled again (in the tty layer, `queue_work_on`), so shares are \
         indicative.\n",
        p.tracing_share, p.samples
    );
}

fn render_missed(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Missed goals\n");
    let mut any = false;
    for wl in &r.workloads {
        if wl.met() != Some(false) {
            continue;
        }
        any = true;
        render_missed_workload(w, r, wl);
    }
    let drops = total_drops(r);
    if drops > 0 {
        any = true;
        let _ = writeln!(
            w,
            "### Ring-buffer failures: {drops}, goal 0\n\n\
             The events ring buffer is 256 KiB, room for about 4,000 events of 64 bytes; \
             per terminal the probes send at most one input notice per second, so a \
             burst of input into more terminals than that within the time the daemon \
             takes to read (the scale burst: {} sent, {} failed) overflows it. Nothing is \
             lost for enforcement — the maps always hold the latest input and the daemon \
             reads them when it decides — but a first input that is dropped delays \
             discovery until the next notice. What would close it: size the ring buffer \
             with the terminal map (`max_ttys` × 64 bytes, 1 MiB for 16,384 terminals), \
             and have the daemon's reader drain in a loop without awaiting the channel \
             for every event.\n",
            num(r.scale.as_ref().map_or(0, |s| s.burst.sent) as f64),
            num(r.scale.as_ref().map_or(0, |s| s.burst.dropped) as f64)
        );
    }
    if let Some(s) = &r.scale {
        any |= render_missed_scale(w, r, s);
    }
    if let Some(e) = &r.enforcement {
        any |= render_missed_enforcement(w, e);
    }
    if let Some((ns, name, workload)) = worst_program(r)
        && ns >= PROGRAM_NS_GOAL
    {
        any = true;
        let _ = writeln!(
            w,
            "### Cost per event: `{name}` takes {ns:.0} ns per run in `{workload}`, goal \
             < {PROGRAM_NS_GOAL} ns (over by {:.0} ns)\n",
            ns - PROGRAM_NS_GOAL
        );
        // Per program, the range of its cost over the workloads where it ran enough.
        let mut by_program: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
        for wl in &r.workloads {
            for p in wl.programs.iter().filter(|p| p.runs >= MIN_RUNS_FOR_GOAL) {
                if let Some(ns) = p.ns_per_run() {
                    let e = by_program.entry(p.name.clone()).or_insert((ns, ns));
                    e.0 = e.0.min(ns);
                    e.1 = e.1.max(ns);
                }
            }
        }
        let over: Vec<String> = by_program
            .iter()
            .filter(|(_, (_, hi))| *hi >= PROGRAM_NS_GOAL)
            .map(|(name, (lo, hi))| format!("`{name}` {lo:.0}–{hi:.0} ns"))
            .collect();
        let _ = writeln!(
            w,
            "Over the goal (range over the workloads): {}. The programs read the task, \
             its descriptor table and its controlling terminal with direct loads (the \
             verifier knows their BTF types), but the descriptor array (`struct file **`) \
             and everything behind a file's `void *private_data` are plain numbers to the \
             verifier, so the file, its inode and a pty's key take `bpf_probe_read_kernel` \
             calls: three or four before a write is known not to be a terminal's, six \
             more for a keystroke (tty, index, devpts instance, its superblock, device), \
             then a hash update. A helper call costs about 25 ns here, and the statistics \
             add two clock reads to every run. What would close it: typing those pointers \
             (`bpf_rdonly_cast`, 6.2+, or a small CO-RE C shim), so that the whole walk is \
             direct loads; the fentry backend starts from a typed `struct file`.\n",
            over.join(", ")
        );
    }
    if !any {
        let _ = writeln!(w, "None: every goal was met in this run.\n");
    }
}

fn render_missed_scale(w: &mut String, r: &Results, s: &ScaleResult) -> bool {
    let mut any = false;
    let rss = mib(s.rss_kib_discovered.max(s.rss_kib_end));
    if rss >= RSS_GOAL_MIB {
        any = true;
        let _ = writeln!(
            w,
            "### RSS with {} sessions: {rss:.1} MiB, goal < {RSS_GOAL_MIB} MiB (over by \
             {:.1} MiB)\n\nAbout {:.1} KiB per session. What would close it: keep one \
             compact record per session (no cloned strings per session for user, tty, \
             group names; intern them) and drop per-discovery caches after start-up.\n",
            num(s.sessions as f64),
            rss - RSS_GOAL_MIB,
            (s.rss_kib_discovered as f64) / s.sessions.max(1) as f64
        );
    }
    if s.discovered_s >= DISCOVERY_GOAL_S {
        any = true;
        let per = (s.ready_s - r.backend.ready_s).max(0.0) / s.sessions.max(1) as f64 * 1e6;
        let _ = writeln!(
            w,
            "### Start-up discovery of {} sessions: {:.2} s, goal < {DISCOVERY_GOAL_S} s \
             (over by {:.2} s)\n\n\
             The daemon answers its first request only after discovery, {:.2} s after \
             spawn against {:.2} s with no sessions: about {per:.0} µs per session, spent \
             in system calls (counts below). Discovery reads every process once, then \
             resolves the terminals one at a time from /proc: the leader's terminal \
             descriptor, its status, cgroup and audit session, the server's descriptors \
             (once per server), user and group names (remembered for 5 s), map updates, \
             an audit record and a log line. What would close it: batch the map updates, \
             and serve the control socket while discovery runs.\n",
            num(s.sessions as f64),
            s.discovered_s,
            s.discovered_s - DISCOVERY_GOAL_S,
            s.ready_s,
            r.backend.ready_s,
        );
        if let Some(c) = &s.discovery_syscalls {
            let _ = writeln!(
                w,
                "A second start-up with the same sessions makes {} system calls up to its \
                 first answer (counted with `perf stat`), {} per session: {}.\n",
                num(c.total() as f64),
                num(c.total() as f64 / s.sessions.max(1) as f64),
                c.per(s.sessions as f64, 10)
            );
        }
    }
    any
}

fn render_missed_enforcement(w: &mut String, e: &EnforcementResult) -> bool {
    let mut any = false;
    let deaths = sorted(&e.death_late_ms);
    let p99 = percentile(&deaths, 99.0);
    if p99 >= ENFORCEMENT_P99_MS {
        any = true;
        let decided = sorted(&e.decided_late_ms);
        let took = sorted(&e.took_ms);
        let _ = writeln!(
            w,
            "### Enforcement latency p99: {p99:.0} ms, goal < {ENFORCEMENT_P99_MS} ms \
             (over by {:.0} ms)\n\n\
             The decision itself is late by {:.0} ms at p99 (audit `idle_seconds`, which \
             the audit log rounds to 0.1 s), and ending the processes takes {:.0} ms at \
             p99 after it (`took_ms`). The keystrokes took {:.3} s to write, so all \
             deadlines fall due within that time; the leaders then die {:.2} ms apart on \
             average (first {:.0} ms, last {:.0} ms after their deadlines): the core task \
             decides the due sessions one after another (their timing from the maps, \
             a log line) and spawns a task per session for the closing line, the targets \
             (from one /proc snapshot shared by the sessions due together) and the \
             signals; a thousand such tasks share the runtime's two worker threads with \
             the core. What would close it: ends decided in one batch per tick, and the \
             tasks' /proc and terminal I/O on a blocking pool sized for bursts.\n",
            p99 - ENFORCEMENT_P99_MS,
            percentile(&decided, 99.0),
            percentile(&took, 99.0),
            e.keystrokes_s,
            (deaths.last().copied().unwrap_or(0.0) - deaths.first().copied().unwrap_or(0.0))
                / (deaths.len().max(2) - 1) as f64,
            deaths.first().copied().unwrap_or(f64::NAN),
            deaths.last().copied().unwrap_or(f64::NAN),
        );
    }
    any
}

fn render_missed_workload(w: &mut String, r: &Results, wl: &WorkloadResult) {
    let s = wl.ratio();
    let target = wl.target.unwrap_or(1.0);
    let op = op_name(wl);
    let det_ns = median_of(&wl.detached, |run| cpu_ns_per_op(wl, run));
    let att_ns = median_of(&wl.attached_runs(), |run| cpu_ns_per_op(wl, run));
    let daemon_ns = median_of(&wl.attached_runs(), |run| {
        run.daemon_cpu_s * 1e9 / (run.amount * wl.ops_per_unit)
    });
    let prog_ns = program_ns_per_op(wl);
    let _ = writeln!(
        w,
        "### `{}`: ratio {:.4}, goal ≥ {target} (missed by {:.4}, {:.1} %)\n",
        wl.name,
        s.median,
        target - s.median,
        (target - s.median) / target * 100.0
    );
    let _ = writeln!(
        w,
        "One {op} costs {det_ns:.0} ns of CPU detached and {att_ns:.0} ns attached \
         (medians, workload and daemon): {:.0} ns more. The daemon's own CPU accounts \
         for {daemon_ns:.0} ns of it; the programs' run time for {prog_ns:.0} ns ({}); \
         the rest is the kernel's path to the programs (while a `syscalls:` tracepoint \
         is enabled, every system call of every task takes the slow entry path, and for \
         the traced calls the kernel builds a perf record of the arguments before the \
         program runs) and caches.\n",
        att_ns - det_ns,
        wl.programs
            .iter()
            .filter(|p| p.runs as f64 >= 0.01 * program_ops(wl))
            .map(|p| format!(
                "`{}` {:.2} runs × {:.0} ns",
                p.name,
                p.runs as f64 / program_ops(wl).max(1.0),
                p.ns_per_run().unwrap_or(0.0)
            ))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if let Some(p) = &wl.profile {
        let _ = writeln!(
            w,
            "Profile of an attached run (perf, {}): BPF programs, helpers and tracepoint \
             glue take {:.1} % of the workload's samples.\n",
            p.scope, p.tracing_share
        );
        render_profile(w, p);
    } else if let Some(err) = &wl.profile_error {
        let _ = writeln!(w, "No profile: {err}.\n");
    }
    let remedy = match (wl.kind, r.backend.used.as_str()) {
        (_, "fentry") => {
            "With fentry the programs run only on the tty and UDP receive paths; what \
             remains is the programs' own work per event (see the per-program table)."
        }
        (Kind::UnrelatedWrites, _) => {
            "Every write(2) on the host runs `tp_write`, which has to find the file \
             behind the descriptor and its inode (task, files and fdtable by direct \
             loads, then three or four `bpf_probe_read_kernel` calls) before it knows the \
             file is not a terminal; and while any `syscalls:` tracepoint is enabled, every \
             system call of every task takes the slow entry path, and for write, writev, \
             read and ioctl the kernel copies the arguments into a perf record before the \
             program runs. What would close it: the fentry backend, where unrelated \
             writes never reach a program (`tty_write` is only called for terminals); on \
             kernels without trampolines, one BTF raw tracepoint (`tp_btf/sys_enter`) \
             that returns unless the call is write or writev, which removes the perf \
             record, and typed access to the descriptor array (`bpf_rdonly_cast`, 6.2+), \
             which removes the helper calls. The slow entry path stays, and by itself \
             costs more than 3 % of a 200 ns write."
        }
        (Kind::Keystrokes, _) => {
            "A keystroke costs one `tp_write` on the master (the file walk, then the \
             pty's key from its tty: index, devpts instance, superblock and device, six \
             helper reads in all, and a hash update), and the shell's read(2) of it runs \
             `tp_read_enter` (direct loads of the reader's controlling terminal: not a \
             console) and `tp_read_exit` (a hash lookup). The fentry backend misses this \
             goal too (see the VM section where there is one): finding the key and \
             updating the map cost about as much as a 1-byte pty write itself. What would \
             close it: direct loads for the tty (`bpf_rdonly_cast` on `private_data`, or \
             a CO-RE C shim), and fewer map operations per keystroke (the revocation \
             check folded into the activity entry)."
        }
        (Kind::TerminalOutput, _) => {
            "Each output write runs `tp_write` (the file walk, the slave's key from its \
             inode and a hash lookup) and each read of the master runs `tp_read_enter` \
             and `tp_read_exit`. What would close it: the fentry backend, or typed access \
             to the descriptor array. (Caching a descriptor's verdict per process would \
             save the walk but go stale: a closed `struct file` is reused for the next \
             open, so a cache could take a new pty master for the old /dev/null.)"
        }
        (Kind::UnrelatedUdp, _) => {
            "Every receive runs `tp_sock_recv` (a lookup of the receiving process in \
             `PROCS`), and enabled `syscalls:` tracepoints put every system call on the \
             slow entry path. What would close it: the fentry backend (`udp_recvmsg` only), \
             or a BTF tracepoint for `sock_recv_length`."
        }
        (Kind::ProcessChurn, _) => "",
    };
    if !remedy.is_empty() {
        let _ = writeln!(w, "{remedy}\n");
    }
}

fn render_raw(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Every run\n");
    let _ = writeln!(
        w,
        "<details><summary>Every run, in order: throughput, work per CPU-second, \
         CPU times and ratios</summary>\n"
    );
    for wl in &r.workloads {
        let _ = writeln!(w, "`{}` ({}):\n", wl.name, wl.unit);
        let _ = writeln!(
            w,
            "| run | throughput (/s) | per CPU-s | workload CPU (s) | daemon CPU (s) | \
             ratio per CPU-s | wall-clock ratio |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        let row = |w: &mut String, label: String, run: &Run, ratios: Option<(f64, f64)>| {
            let _ = writeln!(
                w,
                "| {label}{} | {} | {} | {:.3} | {:.3} | {} | {} |",
                if run.disturbed { " (disturbed)" } else { "" },
                num(run.throughput()),
                num(run.per_cpu_second()),
                run.cpu_s,
                run.daemon_cpu_s,
                ratios.map_or(String::new(), |(c, _)| format!("{c:.4}")),
                ratios.map_or(String::new(), |(_, wr)| format!("{wr:.4}")),
            );
        };
        for (i, d) in wl.detached.iter().enumerate() {
            row(w, format!("D{}", i + 1), d, None);
            if let Some(a) = wl.attached.get(i) {
                let ratios = wl
                    .ratios
                    .get(i)
                    .copied()
                    .zip(wl.wall_ratios.get(i).copied());
                row(w, format!("A{}", i + 1), &a.run, ratios);
            }
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w, "</details>\n");
}

/// The VM runs' goal rows, each with what to prefix it with.
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
    let _ = writeln!(
        w,
        "## The fentry backend, in a VM
"
    );
    let kernel = vm.kernel.as_deref().unwrap_or(&vm.asked);
    let _ = writeln!(
        w,
        "This machine's kernel refuses BPF trampolines, so the fentry backend was measured \
         in a VM booting Debian's stock kernel `{kernel}`, through the kernel matrix's \
         harness (`cargo xtask vm-test`: QEMU with software emulation, since KVM guests hang \
         on these machines; 2 vCPUs, 2 GiB), with this build of the daemon and the same \
         throughput workloads. The tracepoint backend ran in the same VM, so that the two \
         are compared under the same emulation. Emulation makes everything many times \
         slower, and not evenly, so compare the VM's ratios with each other, not with the \
         host's; its absolute numbers say nothing about real machines. Scale and \
         enforcement latency are measured on the host only.\n"
    );
    if let Some(problem) = &vm.problem {
        let _ = writeln!(w, "The VM could not be prepared: {problem}\n");
        return;
    }
    let _ = writeln!(
        w,
        "| backend | ratio (median) per workload | VM time |\n|---|---|---|"
    );
    for run in &vm.runs {
        let ratios = match &run.report {
            Ok(report) => in_vm::goal_rows(report)
                .iter()
                .filter_map(|row| {
                    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                    let what = cells
                        .get(1)?
                        .strip_suffix(": work per CPU-second, attached/detached")?;
                    let measured = cells.get(3)?.split(" (").next()?;
                    Some(format!("{what} {measured}"))
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(err) => format!("failed: {err}"),
        };
        let _ = writeln!(
            w,
            "| `{}` | {ratios} | {:.0} s |",
            run.backend,
            run.took.as_secs_f64()
        );
    }
    let _ = writeln!(w);
    for run in &vm.runs {
        let _ = writeln!(w, "### With the {} backend\n", run.backend);
        match &run.report {
            Ok(report) => {
                let _ = writeln!(w, "{}", in_vm::embedded(report));
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
            match g.met {
                Some(true) => "met",
                Some(false) => "MISSED",
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
}
