//! `cargo xtask setup`: installs what building and testing need on a fresh Debian 12
//! machine, and nothing that is already there. Every step says what it checked and
//! what it did; a step that cannot be done fails with its name in the message.

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use crate::{
    apt,
    cmd::{self, done_already, step},
};

/// What the set-up is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Purpose {
    /// Build and run the daemon.
    Run,
    /// Also run the integration tests against real peers.
    Test,
}

/// Needed to build bpf-linker against the system's LLVM (its major version must match
/// the nightly rustc's LLVM, 22 here).
const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// The real programs the integration tests drive, and the tools their diagnostics use.
const TEST_PACKAGES: &[&str] = &[
    "openssh-server",
    "openssh-client",
    "mosh",
    "tmux",
    "prometheus",
    "bpftool",
    "locales",
    "procps",
    // capsh: a unit test checks the capability bits preflight names against it.
    "libcap2-bin",
    "iproute2",
    // The membership test's helper process (threads, forks, pipe and socket writes).
    "python3",
    // Real container runtimes (tests/runtimes.rs, tests/image.rs): podman with runc
    // (crun refuses hybrid cgroup layouts), dockerd started by the test, and
    // debootstrap for the Debian base image (no registry is needed).
    "podman",
    "runc",
    "conmon",
    "docker.io",
    "debootstrap",
    // podman's CNI network backend validates its plugin directory at every start.
    "containernetworking-plugins",
    // tests/install.rs: a fresh Debian root (debootstrap, above) to install the
    // package into, and `systemd-analyze verify` for its unit.
    "systemd",
    // tests/audit.rs: the unprivileged caller flooding the control socket, and the
    // shipped logrotate snippet run by logrotate.
    "perl",
    "logrotate",
];

/// Pinned: one bpf-linker release emitted BTF that kernels reject (aya-rs/bpf-linker#318).
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Offline validation of Kubernetes manifests, for the manifest tests.
const PYTHON_PACKAGES: &[&str] = &["kubernetes-validate"];
/// Where pip lives on our machines when it is not in PATH.
pub const PIP_FALLBACKS: &[&str] = &["/root/.pyenv/shims/pip", "/root/.pyenv/shims/pip3"];

/// Kernel file systems the daemon needs: tracepoints are attached through tracefs.
const MOUNTS: &[(&str, &str)] = &[("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")];

pub fn setup(purpose: Purpose) -> Result<()> {
    let mut setup = Setup::default();
    step(format!(
        "set-up for `{}`",
        if purpose == Purpose::Run {
            "run"
        } else {
            "test"
        }
    ));
    setup.check_root();
    let mut packages = BUILD_PACKAGES.to_vec();
    if purpose == Purpose::Test {
        packages.extend_from_slice(TEST_PACKAGES);
    }
    step(format!("Debian packages: {}", packages.join(" ")));
    apt::install_missing(&packages)?;
    setup.rust_src()?;
    setup.bpf_linker()?;
    for &(fstype, target) in MOUNTS {
        setup.mount(fstype, target)?;
    }
    if purpose == Purpose::Test {
        setup.python_packages(PYTHON_PACKAGES)?;
    }
    step("set-up complete");
    Ok(())
}

#[derive(Default)]
struct Setup {
    root: bool,
}

impl Setup {
    /// Installing packages and mounting need root; the checks do not, so a user with
    /// everything in place can still build.
    fn check_root(&mut self) {
        step("checking for root");
        let euid = rustix::process::geteuid();
        self.root = euid.is_root();
        if self.root {
            done_already("running as root");
        } else {
            println!(
                "    warning: not running as root (euid {}): steps that install or mount \
                 will fail, and the daemon and the integration tests need root",
                euid.as_raw()
            );
        }
    }

    fn require_root(&self, what: &str) -> Result<()> {
        if !self.root {
            bail!("{what}: needs root; run `cargo xtask` as root (e.g. `sudo -E cargo xtask ...`)");
        }
        Ok(())
    }

    /// The eBPF crate is built with nightly and `-Z build-std=core`, which needs the
    /// standard library's source.
    fn rust_src(&self) -> Result<()> {
        let what = "nightly toolchain with rust-src";
        step(what);
        if cmd::find_program("rustup", &[]).is_none() {
            bail!("{what}: rustup not found in PATH; install it from https://rustup.rs");
        }
        let toolchains = cmd::stdout_if_ok(Command::new("rustup").args(["toolchain", "list"]))
            .unwrap_or_default();
        if !toolchains.lines().any(|l| l.starts_with("nightly")) {
            return cmd::run(
                what,
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ]),
            );
        }
        let installed = cmd::stdout_if_ok(Command::new("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))
        .unwrap_or_default();
        if installed.lines().any(|l| l.trim() == "rust-src") {
            done_already("rust-src is installed for nightly");
            return Ok(());
        }
        cmd::run(
            what,
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        )
    }

    /// bpf-linker links the eBPF object; built against the system's LLVM 22.
    fn bpf_linker(&self) -> Result<()> {
        let what = format!("bpf-linker {BPF_LINKER_VERSION}");
        step(&what);
        if let Some(version) = bpf_linker_version() {
            if version == BPF_LINKER_VERSION {
                done_already(format!("bpf-linker {version} is installed"));
                return Ok(());
            }
            println!("    found bpf-linker {version}, replacing it with {BPF_LINKER_VERSION}");
        }
        println!("    building bpf-linker (takes a few minutes, once)");
        cmd::run(
            &what,
            cmd::cargo()
                .env("LLVM_PREFIX", LLVM_PREFIX)
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args(["--locked", "--no-default-features", "--features", "llvm-22"]),
        )?;
        match bpf_linker_version() {
            Some(version) if version == BPF_LINKER_VERSION => Ok(()),
            Some(version) => bail!(
                "{what}: `bpf-linker` in PATH is still {version}; put cargo's bin directory \
                 (~/.cargo/bin) first in PATH"
            ),
            None => bail!(
                "{what}: installed, but `bpf-linker` is not in PATH; add cargo's bin \
                 directory (~/.cargo/bin) to PATH"
            ),
        }
    }

    fn mount(&self, fstype: &str, target: &str) -> Result<()> {
        let what = format!("{fstype} at {target}");
        step(&what);
        let mounts = std::fs::read_to_string("/proc/self/mounts")
            .with_context(|| format!("{what}: reading /proc/self/mounts"))?;
        let mounted = mounts.lines().any(|line| {
            let mut fields = line.split_whitespace().skip(1);
            fields.next() == Some(target) && fields.next() == Some(fstype)
        });
        if mounted {
            done_already(format!("{target} is mounted"));
            return Ok(());
        }
        self.require_root(&what)?;
        cmd::run(
            &format!("mounting {what}"),
            Command::new("mount").args(["-t", fstype, fstype, target]),
        )
    }

    /// Python packages for tests written by others; skipped (with a note) without pip,
    /// since only the tests that use them need them.
    fn python_packages(&self, packages: &[&str]) -> Result<()> {
        let what = format!("Python packages: {}", packages.join(" "));
        step(&what);
        let Some(pip) = cmd::find_program("pip", PIP_FALLBACKS) else {
            println!("    skipped: pip not found; tests that need these packages fail");
            return Ok(());
        };
        for package in packages {
            let installed = cmd::output(Command::new(&pip).args(["show", "--quiet", package]))
                .is_ok_and(|o| o.status.success());
            if installed {
                done_already(format!("{package} is installed"));
                continue;
            }
            cmd::run(
                &format!("installing Python package {package}"),
                Command::new(&pip).args(["install", "--disable-pip-version-check", package]),
            )?;
        }
        Ok(())
    }
}

/// The version `bpf-linker --version` reports.
fn bpf_linker_version() -> Option<String> {
    let out = cmd::stdout_if_ok(Command::new("bpf-linker").arg("--version"))?;
    parse_bpf_linker_version(&out)
}

/// `bpf-linker 0.13.0` -> `0.13.0`.
fn parse_bpf_linker_version(out: &str) -> Option<String> {
    let mut words = out.split_whitespace();
    (words.next()? == "bpf-linker").then_some(())?;
    words.next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bpf_linker_version() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n").as_deref(),
            Some("0.13.0")
        );
        assert_eq!(parse_bpf_linker_version("something else 1.0"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
    }
}
