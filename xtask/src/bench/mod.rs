//! `cargo xtask bench`: what the daemon costs the machine it watches.
//!
//! Every throughput workload runs with the daemon attached and detached in turn
//! (`D A D A ... D`) in one invocation, so that both sides see the same machine;
//! the report gives the median and spread of the attached/detached ratios, the
//! daemon's own CPU time and memory, the cost of each BPF program, start-up
//! discovery at scale and enforcement latency. The report (`BENCHMARKS.md`) is
//! written by [`report`] from the measurements only.
//!
//! - [`runner`]: alternation and the per-run measurements;
//! - [`workloads`]: what runs (pty output, keystrokes, unrelated writes, UDP, churn);
//! - [`scale`], [`enforce`]: many sessions; enforcement latency;
//! - [`daemon`], [`bpf`], [`profile`], [`sys`]: the daemon, bpftool, perf, the system;
//! - [`stats`]: medians, quartiles, percentiles;
//! - [`in_vm`]: the fentry backend, measured in a VM where this kernel refuses it.

mod bpf;
mod daemon;
mod enforce;
mod floor;
mod in_vm;
mod profile;
mod report;
mod runner;
mod scale;
mod stats;
mod sys;
mod whole;
mod workloads;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build,
    cmd::{self, step},
    setup::{self, Purpose},
};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The daemon's probe backend (`session-monitor run --backend`).
    #[arg(long, default_value = "auto", value_parser = ["auto", "fentry", "tracepoint"])]
    pub backend: String,
    /// Fewer and shorter runs (a minute or two), to keep the benchmark working in CI.
    #[arg(long)]
    pub quick: bool,
    /// Where to write the report [default: BENCHMARKS.md in the repository root;
    /// with --quick or --only, target/bench/BENCHMARKS.{quick,partial}.md].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Run only these parts, to investigate one: workload names or their first words
    /// (`keystrokes` is every keystrokes-N, `keystrokes-1` only that one;
    /// `writes-devnull`), `scale`, `enforcement`; comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    pub only: Vec<String>,
    /// Keep the scratch directory (policies, the daemon's log and audit log) and
    /// print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Where this kernel refuses the fentry backend, measure it in a VM booting this
    /// Debian kernel (`cargo xtask vm-test`'s harness): a series (`6.12`) or a version.
    /// Done by default in full runs; with --quick only when given.
    #[arg(long, value_name = "KERNEL")]
    pub vm: Option<String>,
    /// Do not run the VM part.
    #[arg(long, conflicts_with = "vm")]
    pub no_vm: bool,
    /// The backends the VM part measures (each is one boot, about ten minutes). The
    /// tracepoint backend is measured on the host too; in the VM it is compared with
    /// fentry under the same emulation.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "BACKENDS",
        default_value = "fentry,tracepoint",
        value_parser = ["fentry", "tracepoint"],
        conflicts_with = "no_vm"
    )]
    pub vm_backends: Vec<String>,
    /// Inside the VM: use this daemon binary as it is (no set-up, no build), run the
    /// throughput workloads only, with the VM's run sizes.
    #[arg(long, hide = true, value_name = "PATH")]
    pub guest_daemon: Option<PathBuf>,
}

impl BenchArgs {
    fn wants(&self, part: &str) -> bool {
        if self.guest_daemon.is_some() && (part == "scale" || part == "enforcement") {
            // Thousands of sessions under software emulation measure the emulator.
            return false;
        }
        self.only.is_empty() || self.only.iter().any(|o| names(o, part))
    }

    /// The kernel to measure the fentry backend on, if the VM part runs.
    fn vm_kernel(&self) -> Option<String> {
        if self.no_vm || self.guest_daemon.is_some() {
            return None;
        }
        match (&self.vm, self.quick) {
            (Some(kernel), _) => Some(kernel.clone()),
            (None, false) => Some(in_vm::DEFAULT_KERNEL.to_string()),
            (None, true) => None,
        }
    }
}

/// Whether `--only` entry `entry` names `part`: the whole name, or its first words up to
/// a `-` (so `keystrokes-1` is not also `keystrokes-100`).
fn names(entry: &str, part: &str) -> bool {
    part.strip_prefix(entry)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

/// Sizes of one benchmark run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sizes {
    pub plan: runner::Plan,
    pub keystroke_ptys: Vec<usize>,
    pub whole: whole::WholeSizes,
    pub scale_sessions: usize,
    pub scale_idle: Duration,
    pub enforcement_sessions: usize,
    /// How often the enforcement part runs; its report is the run with the median
    /// p99 (see [`enforce::run`]).
    pub enforcement_runs: usize,
}

impl Sizes {
    fn for_args(args: &BenchArgs) -> Self {
        if args.guest_daemon.is_some() {
            // Emulation is slow: shorter runs, but still the 5 pairs the method needs.
            // On fentry the goals are absolute and near 1, where emulation's noise
            // decides: 8 pairs make the median's 90 % interval the second smallest
            // to the second largest round, not the whole range (see
            // `Verdict::WithinNoise`).
            let full = if args.backend == "fentry" { 8 } else { 5 };
            return Self {
                plan: runner::Plan {
                    pairs: if args.quick { 2 } else { full },
                    measure: Duration::from_millis(if args.quick { 300 } else { 1000 }),
                    warmup: Duration::from_millis(300),
                    profile: false,
                    wait_quiet: false,
                },
                keystroke_ptys: vec![1, 100],
                // Whole workloads write under target/ and take long under emulation.
                whole: whole::WholeSizes {
                    run: Vec::new(),
                    ..whole::WholeSizes::quick()
                },
                scale_sessions: 0,
                scale_idle: Duration::ZERO,
                enforcement_sessions: 0,
                enforcement_runs: 0,
            };
        }
        if args.quick {
            Self {
                plan: runner::Plan {
                    pairs: 2,
                    measure: Duration::from_millis(300),
                    warmup: Duration::from_millis(100),
                    profile: false,
                    wait_quiet: false,
                },
                keystroke_ptys: vec![1, 100],
                // The quick subset, unless parts are named (then any, small).
                whole: whole::WholeSizes {
                    run: if args.only.is_empty() {
                        whole::WholeSizes::quick().run
                    } else {
                        whole::NAMES.to_vec()
                    },
                    ..whole::WholeSizes::quick()
                },
                scale_sessions: 1000,
                scale_idle: Duration::from_secs(1),
                enforcement_sessions: 100,
                enforcement_runs: 1,
            }
        } else {
            Self {
                plan: runner::Plan {
                    pairs: 6,
                    measure: Duration::from_secs(2),
                    warmup: Duration::from_millis(500),
                    profile: true,
                    wait_quiet: true,
                },
                keystroke_ptys: vec![1, 100, 1000],
                whole: whole::WholeSizes::full(),
                scale_sessions: 10_000,
                scale_idle: Duration::from_secs(10),
                enforcement_sessions: 1000,
                enforcement_runs: 3,
            }
        }
    }
}

/// The machine and software the numbers were taken on.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub virtualized: bool,
    pub memory_gib: f64,
    pub kernel: String,
    pub kernel_version: String,
    pub os: String,
    pub commit: String,
}

/// The backend the daemon actually used.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BackendInfo {
    pub requested: String,
    pub used: String,
    pub fallback_reason: Option<String>,
    /// (program, attach point).
    pub programs: Vec<(String, String)>,
    /// Programs the daemon attaches only while they have work, not attached when
    /// the run began: (attach point, when).
    pub standby: Vec<(String, String)>,
    pub ready_s: f64,
}

/// Everything the report is made from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Results {
    pub args_line: String,
    pub quick: bool,
    pub sizes: Sizes,
    pub machine: Machine,
    pub backend: BackendInfo,
    pub daemon_command: String,
    pub none_policy: String,
    pub workloads: Vec<runner::WorkloadResult>,
    pub scale: Option<scale::ScaleResult>,
    pub enforcement: Option<enforce::EnforcementResult>,
    /// The daemon's system calls while it ends the sessions (a second run).
    pub enforcement_syscalls: Option<profile::SyscallCounts>,
    pub other_daemons: usize,
    /// CPUs' worth of time used by processes other than the benchmark and its daemon.
    pub other_load: f64,
    pub started_utc: String,
    pub took: Duration,
    pub pty_max: (String, String),
    /// The fentry backend measured in a VM, when this kernel refuses it.
    pub vm: Option<in_vm::VmBench>,
}

const NONE_POLICY: &str = "# Limits nothing: the daemon only watches.\n\
                           idle_timeout = \"none\"\n\
                           network_timeout = \"none\"\n\
                           max_session = \"none\"\n";

/// Set when this process is the optimised xtask that [`bench`] re-executed.
const REEXEC_ENV: &str = "SESSION_MONITOR_BENCH_OPTIMISED";

pub fn bench(args: &BenchArgs) -> Result<()> {
    let began = Instant::now();
    sys::install_interrupt_handler();
    if !rustix::process::geteuid().is_root() {
        bail!("the benchmark loads BPF programs and changes kernel settings: run it as root");
    }
    if cfg!(debug_assertions) && std::env::var_os(REEXEC_ENV).is_none() {
        return reexec_optimised();
    }
    // In the VM this is the host benchmark's own part, under the host's lock.
    let _only = match args.guest_daemon {
        None => Some(sys::OnlyBenchmark::take()?),
        Some(_) => None,
    };
    // Before the build: the commit (and whether the tree differs from it) is that
    // of what is built and measured, not of what the tree holds when the run ends
    // (a full run takes most of an hour).
    let machine = machine();
    let binary = match &args.guest_daemon {
        Some(binary) => binary.clone(),
        None => {
            setup::setup(Purpose::Run)?;
            ensure_tools()?;
            build::build_daemon(true)?
        }
    };
    let sizes = Sizes::for_args(args);
    let output = args.output.clone().unwrap_or_else(|| {
        if !args.only.is_empty() {
            cmd::workspace_root().join("target/bench/BENCHMARKS.partial.md")
        } else if args.quick {
            cmd::workspace_root().join("target/bench/BENCHMARKS.quick.md")
        } else {
            cmd::workspace_root().join("BENCHMARKS.md")
        }
    });

    let workdir =
        std::env::temp_dir().join(format!("session-monitor-bench.{}", std::process::id()));
    let _workdir_guard = RemoveDir(workdir.clone(), args.keep);
    std::fs::create_dir_all(&workdir)?;
    let spec = daemon::DaemonSpec {
        binary,
        backend: args.backend.clone(),
        workdir,
    };
    let none_policy = spec.write_policy("none.toml", NONE_POLICY)?;

    // Room for the scale test: ptys and descriptors, put back at the end.
    let nr: u64 = sys::Sysctl::read("kernel.pty.nr")?.parse().unwrap_or(0);
    let old_max: u64 = sys::Sysctl::read("kernel.pty.max")?.parse().unwrap_or(4096);
    let want_max = old_max.max(nr + sizes.scale_sessions as u64 + 2048);
    let _pty_max = sys::Sysctl::set("kernel.pty.max", &want_max.to_string())?;
    let _nofile = sys::NofileLimit::raise(sizes.scale_sessions as u64 + 4096)?;
    // On only during the program-cost runs (each puts the old value back).
    if sys::Sysctl::read("kernel.bpf_stats_enabled")? != "0" {
        println!(
            "    note: kernel.bpf_stats_enabled was already on; program statistics add to both sides"
        );
    }

    let started_utc = utc_now();
    let busy_before = sys::machine_busy_seconds()?;
    let own_before = sys::own_cpu_seconds();
    let clock = Instant::now();
    let mut other_daemons = daemon::other_daemons(None).len();
    if other_daemons > 0 {
        println!(
            "    note: {other_daemons} other session-monitor daemon(s) running; their probes run in both kinds of runs"
        );
    }

    let backend = probe_backend(&spec, &none_policy)?;
    let mut results_workloads = Vec::new();
    let floor = backend
        .programs
        .iter()
        .map(|(_, attach)| floor::AttachPoint::parse(attach))
        .collect::<Result<Vec<_>>>()?;
    for (name, make) in workloads::all(&sizes.whole, &sizes.keystroke_ptys) {
        if !args.wants(&name) {
            continue;
        }
        let mut workload = make()?;
        results_workloads.push(runner::run_workload(
            &spec,
            &none_policy,
            &sizes.plan,
            &backend.used,
            &floor,
            workload.as_mut(),
        )?);
        other_daemons = other_daemons.max(daemon::other_daemons(None).len());
    }
    let scale = if args.wants("scale") {
        Some(scale::run(
            &spec,
            &none_policy,
            sizes.scale_sessions,
            sizes.scale_idle,
            sizes.plan.profile && perf_usable(),
        )?)
    } else {
        None
    };
    let scale = scale.map(|mut s| {
        if sizes.plan.profile && perf_usable() && s.discovered_s > report::DISCOVERY_GOAL_S {
            match scale::discovery_syscalls(&spec, &none_policy, sizes.scale_sessions) {
                Ok(c) => s.discovery_syscalls = Some(c),
                Err(err) => println!("    system call counts unavailable: {err:#}"),
            }
        }
        s
    });
    let enforcement = if args.wants("enforcement") {
        Some(enforce::run(
            &spec,
            sizes.enforcement_sessions,
            sizes.enforcement_runs,
        )?)
    } else {
        None
    };
    let enforcement_syscalls = match &enforcement {
        Some(e)
            if sizes.plan.profile
                && perf_usable()
                && e.death_p99_ms() > report::ENFORCEMENT_P99_MS =>
        {
            match enforce::syscalls(&spec, sizes.enforcement_sessions) {
                Ok(c) => Some(c),
                Err(err) => {
                    println!("    system call counts unavailable: {err:#}");
                    None
                }
            }
        }
        _ => None,
    };
    let wall = clock.elapsed().as_secs_f64();
    let other_cpu =
        sys::machine_busy_seconds()? - busy_before - (sys::own_cpu_seconds() - own_before);
    let vm = match args.vm_kernel() {
        // Only the throughput workloads run in the VM.
        Some(kernel) if backend.used != "fentry" && !results_workloads.is_empty() => {
            Some(in_vm::run(args, &kernel, &spec.binary))
        }
        _ => None,
    };

    let results = Results {
        args_line: args_line(args),
        quick: args.quick,
        sizes,
        machine,
        backend,
        daemon_command: cmd::display(&spec.command(std::path::Path::new("POLICY")))
            .replace(&spec.workdir.display().to_string(), "$WORKDIR"),
        none_policy: NONE_POLICY.to_string(),
        workloads: results_workloads,
        scale,
        enforcement,
        enforcement_syscalls,
        other_daemons,
        other_load: (other_cpu / wall).max(0.0),
        started_utc,
        took: began.elapsed(),
        pty_max: (old_max.to_string(), want_max.to_string()),
        vm,
    };
    // Raw results go beside the report, except for the repository's BENCHMARKS.md,
    // whose raw results go under target/bench/.
    let raw = match output.parent() {
        Some(dir) if dir == cmd::workspace_root() => report::raw_path(
            &cmd::workspace_root()
                .join("target/bench")
                .join(output.file_name().unwrap_or("BENCHMARKS.md".as_ref())),
        ),
        _ => report::raw_path(&output),
    };
    let text = report::render(&results, &raw);
    for path in [&output, &raw] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&output, &text).with_context(|| format!("writing {}", output.display()))?;
    std::fs::write(&raw, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", raw.display()))?;
    step(format!(
        "report written to {}, raw results to {} (benchmark took {:.0} s)",
        output.display(),
        raw.display(),
        results.took.as_secs_f64()
    ));
    println!("{}", report::summary(&results));
    if let Some(vm) = &results.vm {
        let failed = vm.runs.iter().filter(|run| run.report.is_err()).count();
        if let Some(problem) = &vm.problem {
            bail!("the VM part could not run: {problem}");
        }
        if failed > 0 {
            bail!("{failed} of the VM runs failed (see the report)");
        }
    }
    Ok(())
}

fn perf_usable() -> bool {
    cmd::find_program("perf", &[]).is_some()
}

/// Starts the daemon once to see which backend it uses and how it starts empty.
fn probe_backend(spec: &daemon::DaemonSpec, policy: &std::path::Path) -> Result<BackendInfo> {
    step(format!("which backend `--backend {}` gets", spec.backend));
    let d = daemon::Daemon::start(spec, policy).with_context(|| {
        if spec.backend == "fentry" {
            "the fentry backend cannot load on this kernel (it needs BPF trampolines); \
             it is measured in the VM suite (`cargo xtask vm-test`); run the benchmark \
             with --backend auto or tracepoint here"
                .to_string()
        } else {
            "starting the daemon".to_string()
        }
    })?;
    let status = d.status()?;
    let info = BackendInfo {
        requested: spec.backend.clone(),
        used: status["backend"].as_str().unwrap_or("?").to_string(),
        fallback_reason: status["fallback_reason"].as_str().map(str::to_string),
        programs: status["programs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or("?").to_string(),
                    p["attach"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect(),
        standby: status["standby_programs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["attached"] == false)
            .map(|p| {
                (
                    p["attach"].as_str().unwrap_or("?").to_string(),
                    p["attached_while"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect(),
        ready_s: d.ready_after.as_secs_f64(),
    };
    d.stop()?;
    println!(
        "    backend {}{}",
        info.used,
        info.fallback_reason
            .as_ref()
            .map(|r| format!(" (fentry unavailable: {r})"))
            .unwrap_or_default()
    );
    Ok(info)
}

/// The workloads run in this process, so it must be an optimised build (`cargo
/// xtask` builds xtask without optimisation): build xtask in release mode and
/// become it.
fn reexec_optimised() -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    step("building xtask with optimisations (the workloads run in it)");
    cmd::run(
        "building xtask (release)",
        cmd::cargo().args(["build", "--release", "--package", "xtask"]),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"));
    let exe = target.join("release/xtask");
    let mut command = Command::new(&exe);
    command
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, "1");
    println!("    $ {}", cmd::display(&command));
    let err = command.exec();
    bail!("cannot exec {}: {err}", exe.display())
}

/// What the benchmark runs besides the daemon, as (program, Debian package): bpftool
/// reads the programs' statistics; the whole workloads build, archive, and log in
/// through a real sshd.
const TOOLS: &[(&str, &str)] = &[
    ("bpftool", "bpftool"),
    ("make", "make"),
    ("cc", "gcc"),
    ("git", "git"),
    ("tar", "tar"),
    ("sshd", "openssh-server"),
    ("ssh", "openssh-client"),
];

fn ensure_tools() -> Result<()> {
    step("tools the benchmark runs");
    let found = |program: &str| {
        cmd::find_program(
            program,
            &[&format!("/usr/sbin/{program}"), &format!("/sbin/{program}")],
        )
        .is_some()
    };
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(program, _)| !found(program))
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        cmd::done_already("all installed");
        return Ok(());
    }
    crate::apt::install_missing(&missing)?;
    if let Some((program, _)) = TOOLS.iter().find(|(program, _)| !found(program)) {
        bail!("{program} still not found after apt-get install");
    }
    Ok(())
}

/// The scratch directory, removed when the benchmark ends unless it is to be kept.
struct RemoveDir(PathBuf, bool);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if self.1 {
            println!("    scratch directory kept: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn args_line(args: &BenchArgs) -> String {
    let mut line = format!("cargo xtask bench --backend {}", args.backend);
    if args.quick {
        line.push_str(" --quick");
    }
    if let Some(out) = &args.output {
        line.push_str(&format!(" --output {}", out.display()));
    }
    if !args.only.is_empty() {
        line.push_str(&format!(" --only {}", args.only.join(",")));
    }
    if let Some(kernel) = &args.vm {
        line.push_str(&format!(" --vm {kernel}"));
    }
    if args.no_vm {
        line.push_str(" --no-vm");
    }
    if args.vm_kernel().is_some() && args.vm_backends.len() != 2 {
        line.push_str(&format!(" --vm-backends {}", args.vm_backends.join(",")));
    }
    line
}

fn utc_now() -> String {
    cmd::stdout_if_ok(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let git = |args: &[&str]| {
        cmd::stdout_if_ok(
            Command::new("git")
                .current_dir(cmd::workspace_root())
                .args(args),
        )
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
    };
    let mut commit = git(&["rev-parse", "--short=12", "HEAD"]);
    if !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit.push_str(" (with uncommitted changes)");
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let uname = rustix::system::uname();
    let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
    Machine {
        cpu: field("model name"),
        cpus,
        virtualized: field("flags").split_whitespace().any(|f| f == "hypervisor"),
        memory_gib: mem_kib / (1024.0 * 1024.0),
        kernel: text(uname.release()),
        kernel_version: text(uname.version()),
        os,
        commit,
    }
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn only_names_whole_words() {
        assert!(names("keystrokes", "keystrokes-1"));
        assert!(names("keystrokes", "keystrokes-100"));
        assert!(names("keystrokes-1", "keystrokes-1"));
        assert!(!names("keystrokes-1", "keystrokes-100"));
        assert!(names("writes", "writes-pipe"));
        assert!(!names("write", "writes-pipe"));
        assert!(names("scale", "scale"));
    }
}
