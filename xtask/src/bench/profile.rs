//! CPU profiles with `perf record -a` (software clock sampling, so it works in VMs
//! without a PMU), for the measurements that miss their target.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::sys;
use crate::cmd;

/// Where a profile's samples were taken, largest share first.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Profile {
    /// Whose samples.
    pub scope: String,
    /// (share of the scope's samples in %, symbol).
    pub top: Vec<(f64, String)>,
    /// Share of samples in BPF programs, BPF helpers and the tracepoint glue, in %.
    pub tracing_share: f64,
    pub samples: String,
}

/// A running `perf record -a`.
pub struct Recording {
    child: Option<Child>,
    data: PathBuf,
}

impl Recording {
    pub fn start(workdir: &Path) -> Result<Self> {
        let perf = cmd::find_program("perf", &[]).context("perf is not installed")?;
        let data = workdir.join("perf.data");
        let child = Command::new(perf)
            .args(["record", "-a", "-F", "1999", "-o"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        let mut recording = Self {
            child: Some(child),
            data,
        };
        // perf needs a moment to open its events on every CPU.
        sys::sleep(Duration::from_millis(700))?;
        if let Some(status) = recording
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!("perf record exited at once ({status}); is perf usable here?");
        }
        Ok(recording)
    }

    /// Stops recording (SIGINT, as Ctrl-C would) and summarises the samples of the
    /// threads named `comm`.
    pub fn finish(mut self, comm: &str) -> Result<Profile> {
        let mut child = self.child.take().expect("recording");
        // Our child, not reaped yet: its pid is still its own.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::INT,
        );
        let status = child.wait()?;
        // perf re-raises the SIGINT it handled once its data is written.
        use std::os::unix::process::ExitStatusExt as _;
        if !status.success() && status.signal() != Some(libc::SIGINT) {
            bail!("perf record failed ({status})");
        }
        let perf = cmd::find_program("perf", &[]).context("perf is not installed")?;
        let mut report = Command::new(perf);
        report
            .args(["report", "-i"])
            .arg(&self.data)
            .args(["--stdio", "--no-children", "--sort", "sym"])
            .args(["--percentage", "relative", "--comms", comm]);
        let out = report
            .stdin(Stdio::null())
            .output()
            .context("running perf report")?;
        if !out.status.success() {
            bail!(
                "perf report failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut profile = parse_report(&String::from_utf8_lossy(&out.stdout));
        profile.scope = format!("threads named `{comm}`");
        Ok(profile)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.data);
    }
}

/// Lines like `    12.34%  [k] bpf_prog_4730abc29f8efe11_tp_write`.
pub fn parse_report(text: &str) -> Profile {
    let samples = text
        .lines()
        .find_map(|l| l.strip_prefix("# Samples:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut rows: Vec<(f64, String)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let (pct, rest) = l.trim().split_once('%')?;
            let pct: f64 = pct.trim().parse().ok()?;
            Some((pct, rest.trim().to_string()))
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let tracing_share = rows
        .iter()
        .filter(|(_, sym)| is_tracing_symbol(sym))
        .map(|(p, _)| p)
        .sum();
    rows.truncate(15);
    Profile {
        scope: String::new(),
        top: rows,
        tracing_share,
        samples,
    }
}

/// BPF programs and helpers, and the kernel code that runs them from a tracepoint.
fn is_tracing_symbol(sym: &str) -> bool {
    let name = sym.trim_start_matches("[k]").trim();
    [
        "bpf_",
        "__bpf_",
        "trace_call_bpf",
        "perf_syscall_",
        "perf_trace_",
        "perf_tp_",
        "perf_call_bpf",
        "perf_swevent_",
        "syscall_trace_",
        "trace_sys_",
        "copy_from_kernel_nofault",
        "htab_",
        "__htab_",
        "ringbuf_",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines() {
        let text = "# Samples: 4K of event 'cpu-clock'\n#\n    40.00%  [k] do_syscall_64\n    \
                    10.50%  [k] bpf_prog_4730abc29f8efe11_tp_write\n     \
                    5.00%  [k] copy_from_kernel_nofault\n     2.00%  [.] main\n";
        let p = parse_report(text);
        assert_eq!(p.top.len(), 4);
        assert_eq!(p.top[0].1, "[k] do_syscall_64");
        assert!((p.tracing_share - 15.5).abs() < 1e-9);
        assert_eq!(p.samples, "4K of event 'cpu-clock'");
    }
}

/// System calls of a process, counted in the kernel (`perf stat` on the syscall
/// tracepoints) while attached: exact counts, and the process is not slowed down.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyscallCounts {
    /// All system calls.
    pub total: u64,
    /// (system call, calls) for the calls looked at, most frequent first.
    pub calls: Vec<(String, u64)>,
}

impl SyscallCounts {
    /// The most frequent calls as `openat 8.0, read 8.0, ...` per `per` units.
    pub fn per(&self, per: f64, top: usize) -> String {
        self.calls
            .iter()
            .filter(|(_, n)| *n > 0)
            .take(top)
            .map(|(name, n)| format!("{name} {:.1}", *n as f64 / per.max(1.0)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The system calls counted one by one (the daemon's /proc, map and I/O calls).
/// They are counted on `raw_syscalls:sys_enter` filtered by number: the per-call
/// `syscalls:sys_enter_*` events of the calls the daemon's own programs are attached
/// to (read, write, writev, ioctl) never reach perf while it runs, because its
/// programs return 0, which tells the kernel to drop the event.
const COUNTED: &[(&str, libc::c_long)] = &[
    ("openat", libc::SYS_openat),
    ("read", libc::SYS_read),
    ("close", libc::SYS_close),
    ("lseek", libc::SYS_lseek),
    ("statx", libc::SYS_statx),
    ("newfstatat", libc::SYS_newfstatat),
    ("getdents64", libc::SYS_getdents64),
    ("readlinkat", libc::SYS_readlinkat),
    ("statfs", libc::SYS_statfs),
    ("bpf", libc::SYS_bpf),
    ("write", libc::SYS_write),
    ("ioctl", libc::SYS_ioctl),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    ("futex", libc::SYS_futex),
];

/// A running `perf stat -p PID` on the system-call tracepoints.
pub struct SyscallCounter {
    child: Option<Child>,
    out: PathBuf,
}

impl SyscallCounter {
    pub fn attach(pid: u32, workdir: &Path) -> Result<Self> {
        let perf = cmd::find_program("perf", &[]).context("perf is not installed")?;
        let out = workdir.join(format!("syscalls.{pid}.csv"));
        let mut command = Command::new(perf);
        command
            .args(["stat", "-x", ",", "-o"])
            .arg(&out)
            .args(["-e", "raw_syscalls:sys_enter"]);
        for (_, number) in COUNTED {
            command.args([
                "-e",
                "raw_syscalls:sys_enter",
                "--filter",
                &format!("id == {number}"),
            ]);
        }
        let child = command
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf stat")?;
        let mut counter = Self {
            child: Some(child),
            out,
        };
        sys::sleep(Duration::from_millis(150))?;
        if let Some(status) = counter
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!("perf stat exited at once ({status})");
        }
        Ok(counter)
    }

    pub fn finish(mut self) -> Result<SyscallCounts> {
        let mut child = self.child.take().expect("attached");
        // Our child, not reaped yet: its pid is still its own.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::INT,
        );
        child.wait()?;
        let text = std::fs::read_to_string(&self.out).context("reading perf stat's counts")?;
        parse_perf_stat(&text, COUNTED.iter().map(|(name, _)| *name))
    }
}

impl Drop for SyscallCounter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Our child, not reaped yet: its pid is still its own.
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::INT,
            );
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.out);
    }
}

/// `perf stat -x,` lines (`count,unit,event,...`), in the order the events were
/// given: the unfiltered total first, then one per name.
pub fn parse_perf_stat<'a>(
    text: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<SyscallCounts> {
    let counts: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("raw_syscalls:sys_enter"))
        .map(|l| {
            l.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    let Some((&total, each)) = counts.split_first() else {
        bail!("perf stat printed no counts");
    };
    let mut calls: Vec<(String, u64)> = names
        .map(str::to_string)
        .zip(each.iter().copied())
        .collect();
    calls.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(SyscallCounts { total, calls })
}

#[cfg(test)]
mod syscall_tests {
    use super::*;

    #[test]
    fn perf_stat_csv() {
        let text = "# started on Tue\n\n200000,,raw_syscalls:sys_enter,10004,100.00,,\n\
                    80002,,raw_syscalls:sys_enter,10004,100.00,,\n\
                    90000,,raw_syscalls:sys_enter,10004,100.00,,\n\
                    <not counted>,,raw_syscalls:sys_enter,0,100.00,,\n";
        let c = parse_perf_stat(text, ["read", "openat", "bpf"].into_iter()).unwrap();
        assert_eq!(c.total, 200000);
        assert_eq!(c.calls[0], ("openat".to_string(), 90000));
        assert_eq!(c.per(1000.0, 3), "openat 90.0, read 80.0");
        assert!(parse_perf_stat("", std::iter::empty()).is_err());
    }
}
