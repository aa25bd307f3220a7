//! The fentry backend, measured where it loads. Kernels like this project's CI
//! machines refuse BPF trampolines, so the same throughput workloads run inside a VM
//! booting a stock Debian kernel, through the kernel-matrix harness (`cargo xtask
//! vm-test`): this optimised xtask runs there with `--guest-daemon`, writes its own
//! report, and the host's report embeds it. The tracepoint backend runs in the same
//! VM too, so that the two backends are compared under the same emulation.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::BenchArgs;
use crate::{cmd, vm};

/// Debian 12's newer kernel series: the closest to what current nodes run.
pub const DEFAULT_KERNEL: &str = "6.12";
/// Per boot: the workloads take about ten minutes under emulation.
const TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Per boot with --quick (about two minutes; a guest that hangs under emulation must
/// not hold CI for the full run's allowance).
const QUICK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One backend's run in the VM.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VmRun {
    pub backend: &'static str,
    /// The guest's report (markdown), or why there is none.
    pub report: Result<String, String>,
    pub took: Duration,
    /// Where the run's logs are.
    pub dir: PathBuf,
}

/// The VM part of a benchmark.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VmBench {
    /// The kernel as asked for (`6.12`), and the package it resolved to.
    pub asked: String,
    pub kernel: Option<String>,
    /// Why the VM could not be prepared (no run then).
    pub problem: Option<String>,
    pub runs: Vec<VmRun>,
}

/// Boots `kernel` once per backend and runs the throughput workloads inside. Never
/// fails the benchmark: what went wrong is reported.
pub fn run(args: &BenchArgs, kernel: &str, daemon: &Path) -> VmBench {
    let mut bench = VmBench {
        asked: kernel.to_string(),
        kernel: None,
        problem: None,
        runs: Vec::new(),
    };
    let prepared = (|| -> Result<_> {
        let vng = vm::vm_setup()?;
        let mut kernels = vm::fetch_kernels(&[kernel.to_string()])?;
        let kernel = kernels.pop().context("no kernel resolved")?;
        let xtask = std::env::current_exe().context("finding this xtask's binary")?;
        Ok((vng, kernel, xtask, vm::absolute(daemon)?))
    })();
    let (vng, kernel, xtask, daemon) = match prepared {
        Ok(p) => p,
        Err(err) => {
            bench.problem = Some(format!("{err:#}"));
            return bench;
        }
    };
    bench.kernel = Some(kernel.version.clone());
    for backend in ["fentry", "tracepoint"] {
        if !args.vm_backends.iter().any(|b| b == backend) {
            continue;
        }
        let dir = vm::target_dir()
            .join("bench")
            .join(format!("vm-{}-{backend}", kernel.version));
        let started = Instant::now();
        let timeout = if args.quick { QUICK_TIMEOUT } else { TIMEOUT };
        let run = vm::VmRun {
            vng: &vng,
            kernel: &kernel,
            backend,
            daemon: &daemon,
            body: guest_body(args, &xtask, &daemon, backend),
            dir: dir.clone(),
            timeout,
        };
        let report = run
            .run()
            .and_then(|outcome| {
                let report = fs::read_to_string(dir.join("BENCHMARKS.md")).ok();
                match (outcome.rc.as_deref(), report) {
                    (Some("0"), Some(report)) => Ok(report),
                    _ if outcome.timed_out => {
                        bail!("timed out after {} min", timeout.as_secs() / 60)
                    }
                    (rc, _) => bail!(
                        "the benchmark in the VM failed (exit status {}); its output is in {}",
                        rc.unwrap_or("none: the VM ended first"),
                        dir.join("output.log").display()
                    ),
                }
            })
            .map_err(|err| format!("{err:#}"));
        if let Err(err) = &report {
            println!("    VM run with the {backend} backend: {err}");
        }
        bench.runs.push(VmRun {
            backend,
            report,
            took: started.elapsed(),
            dir,
        });
    }
    bench
}

/// The guest's part: this xtask, optimised already, against the host's daemon build.
fn guest_body(args: &BenchArgs, xtask: &Path, daemon: &Path, backend: &str) -> String {
    let mut command = vec![
        xtask.display().to_string(),
        "bench".into(),
        "--backend".into(),
        backend.into(),
        "--guest-daemon".into(),
        daemon.display().to_string(),
        "--output".into(),
        "$out/BENCHMARKS.md".into(),
    ];
    if args.quick {
        command.push("--quick".into());
    }
    if !args.only.is_empty() {
        command.push("--only".into());
        command.push(args.only.join(","));
    }
    let mut body = String::new();
    let _ = writeln!(
        body,
        "cd {} || exit 1",
        vm::quote_path(cmd::workspace_root())
    );
    let _ = writeln!(
        body,
        "{}=1 {} || status=1",
        super::REEXEC_ENV,
        command
            .iter()
            .map(|w| if w.starts_with("$out") {
                format!("\"{w}\"")
            } else {
                vm::shell_quote(w)
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    body
}

/// The guest report's goal rows (`| what | goal | measured | mark |`).
pub fn goal_rows(report: &str) -> Vec<String> {
    report
        .split("## Goals")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip_while(|l| !l.starts_with("|---"))
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(str::to_string)
        .collect()
}

/// The guest report's workload tables: from its first workload table up to the
/// section on the daemon.
pub fn tables(report: &str) -> String {
    let start = ["## Whole workloads", "## Micro workloads"]
        .iter()
        .filter_map(|h| report.find(h))
        .min();
    let Some(start) = start else {
        return report.to_string();
    };
    let rest = &report[start..];
    rest[..rest.find("## The daemon").unwrap_or(rest.len())].to_string()
}

/// The guest report as a part of the host's: its title and "generated by" line
/// dropped, every heading two levels down.
pub fn embedded(report: &str) -> String {
    let mut out = String::new();
    for line in report.lines() {
        if line.starts_with("# ") || line.starts_with("Generated by `") {
            continue;
        }
        if line.starts_with('#') {
            let _ = writeln!(out, "##{line}");
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "# session-monitor benchmarks\n\nGenerated by `x` on y.\n\n\
        ## Goals\n\n| what | goal | measured | |\n|---|---|---|---|\n| a | ≥ 1 | 0.5 | **missed** |\n\
        | b | 0 | 0 | met |\n\nGoals are what we aim for.\n\n### Sub\n";

    #[test]
    fn reads_the_guest_goals() {
        assert_eq!(
            goal_rows(REPORT),
            vec!["| a | ≥ 1 | 0.5 | **missed** |", "| b | 0 | 0 | met |"]
        );
        assert!(goal_rows("no goals here").is_empty());
    }

    #[test]
    fn takes_the_guest_tables() {
        let report = "# t\n\n## Goals\n\nx\n\n## Micro workloads\n\n| a |\n\n## The daemon\n\ny\n";
        assert_eq!(tables(report), "## Micro workloads\n\n| a |\n\n");
    }

    #[test]
    fn embeds_the_guest_report_two_levels_down() {
        let e = embedded(REPORT);
        assert!(!e.contains("# session-monitor benchmarks"));
        assert!(!e.contains("Generated by"));
        assert!(e.contains("\n#### Goals\n"));
        assert!(e.contains("\n##### Sub\n"));
    }
}
