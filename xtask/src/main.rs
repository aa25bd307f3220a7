//! `cargo xtask`: the project's own tasks, so that two commands work on a fresh
//! Debian machine: `cargo xtask run` and `cargo xtask test`. Each task first does the
//! set-up it needs (packages, toolchain pieces, kernel file systems), skipping what is
//! already there.

mod apt;
mod bench;
mod build;
mod cmd;
mod interrupt;
mod libtest;
mod package;
mod run;
mod setup;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::setup::Purpose;

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Set-up, build, run and test session-monitor"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building (or testing) needs; idempotent, prints every step.
    Setup {
        /// `run`: what building and running the daemon needs; `test`: also the real
        /// peers the integration tests drive (sshd, mosh, tmux, ...).
        #[arg(long = "for", value_enum, default_value_t = Purpose::Run)]
        purpose: Purpose,
    },
    /// Set up, then build the daemon (with its eBPF programs).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build in release mode, then replace this process with
    /// `session-monitor run ARGS...` (needs root).
    Run {
        /// Arguments for `session-monitor run`, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up for tests, build, run the unit tests, then the integration tests
    /// one at a time (needs root).
    Test {
        /// Arguments for the integration test binaries (a name filter, `--ignored`,
        /// `--nocapture`, ...), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the release daemon and a Debian package of it (binary, systemd unit,
    /// dry-run policy, logrotate snippet, man pages, completions) in target/package.
    Package {
        /// Package this binary instead of building the release one.
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
        /// Write the .deb into this directory (default: target/package).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Set up, build in release mode, then measure the daemon's overhead (attached
    /// vs detached, alternating) and write BENCHMARKS.md (needs root).
    Bench(bench::BenchArgs),
    /// Boot stock Debian kernels in QEMU (virtme-ng) and run the integration tests
    /// inside, once per probe backend (needs root; about 20 s per boot, plus the suite).
    VmTest {
        /// A Debian kernel: a series (`6.1`, `6.12`: its newest amd64 package) or a
        /// version (`6.1.0-56-amd64`). Repeat for several. Default: 6.1 and 6.12.
        #[arg(long = "kernel", value_name = "NAME")]
        kernels: Vec<String>,
        /// The probe backend(s) to force on the daemon.
        #[arg(long, value_enum, default_value_t = vm::Backends::Both)]
        backend: vm::Backends,
        /// Build and test the release profile.
        #[arg(long)]
        release: bool,
        /// Give up on one VM (boot plus suite) after this many minutes.
        #[arg(long, value_name = "MINUTES", default_value_t = 40)]
        timeout: u64,
        /// Run only this test binary of the tests crate (`ssh`, `mosh`, ...). Repeat
        /// for several. Default: all but those too timing-sensitive for emulation.
        #[arg(long = "test", value_name = "NAME")]
        tests: Vec<String>,
        /// Arguments for the integration test binaries (a name filter, `--nocapture`,
        /// ...), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup { purpose } => setup::setup(purpose),
        Task::Build { release } => {
            setup::setup(Purpose::Run).and_then(|()| build::build_daemon(release).map(drop))
        }
        Task::Run { args } => run::run(&args),
        Task::Test { args } => test::test(&args),
        Task::Bench(args) => bench::bench(&args),
        Task::Package { binary, out } => {
            package::package(&package::Options { binary, out }).map(drop)
        }
        Task::VmTest {
            kernels,
            backend,
            release,
            timeout,
            tests,
            args,
        } => vm::vm_test(&vm::Options {
            kernels,
            backends: backend,
            release,
            timeout: std::time::Duration::from_secs(timeout * 60),
            tests,
            test_args: args,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
