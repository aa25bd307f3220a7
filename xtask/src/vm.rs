//! `cargo xtask vm-test`: the kernel matrix. Boots stock Debian kernels in QEMU with
//! virtme-ng (software emulation: KVM guests hang on our machines) against this
//! machine's file system, and runs the integration test binaries inside, once per
//! probe backend, the daemon forced to it through `SESSION_MONITOR_BACKEND`. That
//! proves the fentry backend, which hardened kernels like our CI's refuse, on kernels
//! that allow it, and holds both backends to the same tests: same scenarios, same
//! verdicts.
//!
//! Kernel packages are fetched with `apt-get download` and unpacked with `dpkg -x`
//! into `target/vm-kernels/<version>/` once (never committed: `target/` is ignored).
//! Every run leaves its logs in `target/vm-kernels/runs/<version>-<backend>/`:
//! `output.log` (what the tests printed, also shown live), `console.log` (the VM's
//! console with the kernel log) and `guest.sh` (the script the VM ran).

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use crate::{
    apt, build,
    cmd::{self, done_already, step},
    interrupt, libtest,
    setup::{self, PIP_FALLBACKS, Purpose},
};

/// What virtme-ng needs on the host: QEMU, modprobe/depmod for the guest's modules,
/// and a static busybox for its initramfs.
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "kmod", "busybox-static"];
/// Pinned: its guest init falls back to the serial console when the host has no udev
/// (as on our machines), which the guest script below does not depend on.
const VIRTME_NG: &str = "virtme-ng";
const VIRTME_NG_VERSION: &str = "1.42";
const VNG_FALLBACKS: &[&str] = &[
    "/root/.pyenv/shims/vng",
    "/usr/local/bin/vng",
    "/root/.local/bin/vng",
];

/// Boots per run: a guest that dies before its job starts is booted again.
const BOOT_ATTEMPTS: u32 = 3;

/// Debian 12's own kernel series and the newer one it ships through its security
/// archive; each resolves to the newest package of the series.
pub const DEFAULT_KERNELS: &[&str] = &["6.1", "6.12"];

/// The integration tests, built for the host and run inside the VM.
const TESTS_PACKAGE: &str = "session-monitor-tests";

/// Test binaries left out of VM runs unless named with `--test`, and why. Under
/// software emulation an ssh login or a tmux start takes seconds, not milliseconds.
const SKIPPED_IN_VMS: &[(&str, &str)] = &[
    (
        "enforcement",
        "its idle limits (4-5 s) are shorter than session set-up under emulation, and it \
         tests the daemon's clock, not the probes",
    ),
    (
        "hostile",
        "its idle limits (2-4 s) are shorter than session set-up under emulation, and it \
         tests how the daemon treats users' descriptors, cgroups and pids, not the probes",
    ),
];

/// Which probe backends to run the suite with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backends {
    Fentry,
    Tracepoint,
    /// Both, one after the other, each in a freshly booted VM.
    Both,
}

impl Backends {
    fn list(self) -> &'static [&'static str] {
        match self {
            Backends::Fentry => &["fentry"],
            Backends::Tracepoint => &["tracepoint"],
            Backends::Both => &["fentry", "tracepoint"],
        }
    }
}

pub struct Options {
    /// Kernel names as given (`6.1`, `6.12.117+deb12-amd64`, ...); empty: the default set.
    pub kernels: Vec<String>,
    pub backends: Backends,
    /// Build and test the release profile.
    pub release: bool,
    /// Per VM (boot plus suite).
    pub timeout: Duration,
    /// Test binaries to run (`ssh`, `mosh`, ...); empty: all but [`SKIPPED_IN_VMS`].
    pub tests: Vec<String>,
    /// For every test binary (a name filter, `--nocapture`, ...).
    pub test_args: Vec<String>,
}

pub fn vm_test(opts: &Options) -> Result<()> {
    let started = Instant::now();
    // The guest runs this machine's sshd, mosh and tmux: the test set-up is needed too.
    setup::setup(Purpose::Test)?;
    let vng = vm_setup()?;

    let daemon = absolute(&build::build_daemon(opts.release)?)?;
    let tests = select_tests(build_tests(opts.release)?, &opts.tests)?;

    let names: Vec<String> = if opts.kernels.is_empty() {
        DEFAULT_KERNELS.iter().map(|s| s.to_string()).collect()
    } else {
        opts.kernels.clone()
    };
    let kernels = fetch_kernels(&names)?;

    let runs = kernel_cache().join("runs");
    let mut results = Vec::new();
    // From here Ctrl-C or SIGTERM stops the running VM and ends the loop (see
    // `VmRun::follow`); QEMU, in a process group of its own, would outlive us.
    interrupt::install_interrupt_handler();
    for kernel in &kernels {
        for &backend in opts.backends.list() {
            interrupt::check_interrupted()?;
            let run = VmRun {
                vng: &vng,
                kernel,
                backend,
                daemon: &daemon,
                body: tests_body(&tests, &opts.test_args),
                dir: runs.join(format!("{}-{backend}", kernel.version)),
                timeout: opts.timeout,
            };
            let outcome = run.run()?;
            results.push(RunResult::new(&run, outcome));
        }
    }
    let summary = summary(&results, started.elapsed());
    print!("{summary}");
    let file = runs.join("summary.txt");
    fs::write(&file, &summary).with_context(|| format!("writing {}", file.display()))?;
    let failed = results.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} kernel/backend runs failed (logs under {})",
            results.len(),
            runs.display()
        );
    }
    Ok(())
}

/// Where kernel packages are unpacked, and VM runs leave their logs.
pub(crate) fn kernel_cache() -> PathBuf {
    target_dir().join("vm-kernels")
}

/// Resolves kernel names (`6.1`, `6.12.117+deb12-amd64`, ...) and unpacks each
/// kernel once.
pub(crate) fn fetch_kernels(names: &[String]) -> Result<Vec<Kernel>> {
    let cache = kernel_cache();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let mut packages = KernelPackages::default();
    let mut versions = Vec::new();
    for name in names {
        let version = packages.resolve(name, &cache)?;
        if !versions.contains(&version) {
            versions.push(version);
        }
    }
    versions.iter().map(|v| packages.fetch(v, &cache)).collect()
}

/// Installs QEMU, kmod, busybox-static and virtme-ng unless they are there; returns
/// the path of `vng`.
pub(crate) fn vm_setup() -> Result<PathBuf> {
    step(format!("VM packages: {}", VM_PACKAGES.join(" ")));
    apt::install_missing(VM_PACKAGES)?;

    step(format!("{VIRTME_NG} {VIRTME_NG_VERSION}"));
    if let Some(vng) = cmd::find_program("vng", VNG_FALLBACKS)
        && vng_version(&vng).as_deref() == Some(VIRTME_NG_VERSION)
    {
        done_already(format!(
            "{} is virtme-ng {VIRTME_NG_VERSION}",
            vng.display()
        ));
        return Ok(vng);
    }
    let pip = match cmd::find_program("pip", PIP_FALLBACKS) {
        Some(pip) => pip,
        None => {
            step("pip");
            apt::install_missing(&["python3-pip"])?;
            cmd::find_program("pip", PIP_FALLBACKS).context("pip not found after installing it")?
        }
    };
    cmd::run(
        "installing virtme-ng",
        Command::new(&pip)
            .args(["install", "--disable-pip-version-check"])
            .arg(format!("{VIRTME_NG}=={VIRTME_NG_VERSION}"))
            // Debian's own pip refuses to touch the system's Python otherwise.
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1"),
    )?;
    let vng = cmd::find_program("vng", VNG_FALLBACKS)
        .context("`vng` not found in PATH after `pip install virtme-ng`")?;
    match vng_version(&vng) {
        Some(v) if v == VIRTME_NG_VERSION => Ok(vng),
        other => bail!(
            "{} reports virtme-ng {other:?}, not {VIRTME_NG_VERSION}: another vng comes first \
             in PATH",
            vng.display()
        ),
    }
}

/// `virtme-ng 1.42` -> `1.42`.
fn vng_version(vng: &Path) -> Option<String> {
    let out = cmd::stdout_if_ok(Command::new(vng).arg("--version"))?;
    out.split_whitespace().nth(1).map(str::to_string)
}

pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("absolute path of {}", path.display()))
}

/// `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => cmd::workspace_root().join(dir),
        None => cmd::workspace_root().join("target"),
    }
}

/// Builds the integration test binaries (the ones `cargo xtask test` runs) and returns
/// their paths, by name.
fn build_tests(release: bool) -> Result<Vec<(String, PathBuf)>> {
    step(format!("building the integration tests of {TESTS_PACKAGE}"));
    let mut command = cmd::cargo();
    command.args(["test", "--package", TESTS_PACKAGE, "--tests", "--no-run"]);
    if release {
        command.arg("--release");
    }
    let mut tests: Vec<(String, PathBuf)> = cmd::cargo_artifacts(
        &format!("building the tests of {TESTS_PACKAGE}"),
        &mut command,
    )?
    .into_iter()
    .filter(|a| a.target.is_test())
    .filter_map(|a| Some((a.target.name, a.executable?.into())))
    .collect();
    if tests.is_empty() {
        bail!("cargo reported no integration test binaries for {TESTS_PACKAGE}");
    }
    tests.sort();
    for (name, path) in &tests {
        println!("    test binary {name}: {}", path.display());
    }
    Ok(tests)
}

/// The test binaries named with `--test`, or all but those skipped in VMs.
fn select_tests(
    built: Vec<(String, PathBuf)>,
    wanted: &[String],
) -> Result<Vec<(String, PathBuf)>> {
    if wanted.is_empty() {
        let (skipped, run): (Vec<_>, Vec<_>) = built
            .into_iter()
            .partition(|(name, _)| SKIPPED_IN_VMS.iter().any(|(s, _)| s == name));
        for (name, _) in &skipped {
            let why = SKIPPED_IN_VMS
                .iter()
                .find(|(s, _)| s == name)
                .map_or("", |(_, why)| why);
            println!("    not run in VMs (name it with --test to run it): {name}: {why}");
        }
        return Ok(run);
    }
    for name in wanted {
        if !built.iter().any(|(n, _)| n == name) {
            let names: Vec<&str> = built.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "no test binary `{name}` in {TESTS_PACKAGE} (there are: {})",
                names.join(", ")
            );
        }
    }
    Ok(built
        .into_iter()
        .filter(|(name, _)| wanted.contains(name))
        .collect())
}

/// A kernel unpacked in the cache.
pub(crate) struct Kernel {
    /// `6.1.0-56-amd64`: the package's name without `linux-image-`, and `uname -r`.
    pub version: String,
    vmlinuz: PathBuf,
}

/// Kernel packages from the machine's apt sources. `apt-get update` runs at most once,
/// and only when the package lists lack what is asked for.
#[derive(Default)]
struct KernelPackages {
    updated: bool,
}

impl KernelPackages {
    fn update(&mut self) -> Result<()> {
        if !self.updated {
            self.updated = true;
            apt::update()?;
        }
        Ok(())
    }

    /// A kernel version from a name: `6.1` or `6.12` stand for the newest amd64 kernel
    /// of that series; anything else is a version (`6.1.0-56-amd64`,
    /// `linux-image-6.12.117+deb12-amd64`).
    fn resolve(&mut self, name: &str, cache: &Path) -> Result<String> {
        let name = name.trim().trim_start_matches("linux-image-");
        let is_series = {
            let parts: Vec<&str> = name.split('.').collect();
            parts.len() == 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        };
        if !is_series {
            return Ok(name.to_string());
        }
        step(format!("newest Debian kernel of the {name} series"));
        let series = name.replace('.', r"\.");
        // Debian 12's own scheme (6.1.0-56-amd64) and the one of newer series
        // (6.12.117+deb12-amd64).
        let patterns = [
            format!("^linux-image-{series}\\.0-[0-9]+-amd64$"),
            format!("^linux-image-{series}\\.[0-9]+\\+deb[0-9]+-amd64$"),
        ];
        for attempt in 0..2 {
            let mut found = Vec::new();
            for pattern in &patterns {
                let out = cmd::stdout_if_ok(Command::new("apt-cache").args([
                    "search",
                    "--names-only",
                    pattern,
                ]))
                .unwrap_or_default();
                found.extend(out.lines().filter_map(|l| {
                    l.split_whitespace()
                        .next()
                        .and_then(|p| p.strip_prefix("linux-image-"))
                        .map(str::to_string)
                }));
            }
            if let Some(newest) = found.into_iter().max_by_key(|v| version_key(v)) {
                println!("    {name} -> linux-image-{newest}");
                return Ok(newest);
            }
            if attempt == 0 {
                println!("    no package in the apt lists; updating them");
                self.update()?;
            }
        }
        // Offline, but fetched before: the newest in the cache.
        let cached = fs::read_dir(cache)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|v| {
                v.starts_with(&format!("{name}.")) && cache.join(v).join(".complete").exists()
            })
            .max_by_key(|v| version_key(v));
        match cached {
            Some(version) => {
                println!("    not in the apt sources; using the cached {version}");
                Ok(version)
            }
            None => bail!(
                "no Debian kernel package of the {name} series in the apt sources \
                 (`apt-cache search --names-only '^linux-image-{name}'` finds none); name a \
                 kernel that `apt-cache search --names-only '^linux-image-6'` lists"
            ),
        }
    }

    /// Unpacks `linux-image-VERSION` into the cache unless it is there already.
    fn fetch(&mut self, version: &str, cache: &Path) -> Result<Kernel> {
        step(format!("kernel {version}"));
        let dir = cache.join(version);
        let kernel = Kernel {
            version: version.to_string(),
            vmlinuz: dir.join("boot").join(format!("vmlinuz-{version}")),
        };
        let stamp = dir.join(".complete");
        if stamp.exists() && kernel.vmlinuz.is_file() {
            done_already(format!("unpacked in {}", dir.display()));
            return Ok(kernel);
        }
        let download = cache.join(format!(".download-{version}"));
        let partial = cache.join(format!(".partial-{version}"));
        for stale in [&download, &partial, &dir] {
            if stale.exists() {
                fs::remove_dir_all(stale)
                    .with_context(|| format!("removing {}", stale.display()))?;
            }
        }
        fs::create_dir_all(&download)
            .with_context(|| format!("creating {}", download.display()))?;
        // The signed image is what Debian installs; the unsigned one has the same
        // kernel and modules and exists for some versions the signed one was dropped from.
        let candidates = [
            format!("linux-image-{version}"),
            format!("linux-image-{version}-unsigned"),
        ];
        let mut got = None;
        for attempt in 0..2 {
            for package in &candidates {
                let mut command = apt::apt_get();
                command.arg("download").arg(package).current_dir(&download);
                if cmd::is_root() {
                    // apt drops to `_apt` for downloads, which cannot write here.
                    command.args(["-o", "APT::Sandbox::User=root"]);
                }
                if cmd::run(&format!("downloading {package}"), &mut command).is_ok() {
                    got = Some(package.clone());
                    break;
                }
            }
            if got.is_some() || attempt == 1 {
                break;
            }
            println!("    not downloadable with the current apt lists; updating them");
            self.update()?;
        }
        let Some(package) = got else {
            bail!(
                "kernel {version}: neither {} nor {} can be downloaded with apt-get; \
                 `apt-cache search --names-only '^linux-image-6'` lists the available ones",
                candidates[0],
                candidates[1]
            );
        };
        let deb = fs::read_dir(&download)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;
        cmd::run(
            &format!("unpacking {package}"),
            Command::new("dpkg").arg("-x").arg(&deb).arg(&partial),
        )?;
        fs::rename(&partial, &dir)
            .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
        fs::remove_dir_all(&download).ok();
        if !kernel.vmlinuz.is_file() {
            bail!(
                "{package} has no {}; is it a kernel image package?",
                kernel.vmlinuz.display()
            );
        }
        fs::write(&stamp, format!("{package}\n"))
            .with_context(|| format!("writing {}", stamp.display()))?;
        Ok(kernel)
    }
}

/// The numbers in a kernel version, for ordering: `6.12.117+deb12-amd64` -> [6, 12, 117, 12].
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Quotes a word for `sh`.
pub(crate) fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

pub(crate) fn quote_path(path: &Path) -> String {
    shell_quote(&path.to_string_lossy())
}

/// One boot: one kernel, one backend, one job (the test binaries, or the benchmark).
pub(crate) struct VmRun<'a> {
    pub vng: &'a Path,
    pub kernel: &'a Kernel,
    pub backend: &'static str,
    pub daemon: &'a Path,
    /// Shell lines run after the common set-up; they set `status` when they fail.
    pub body: String,
    pub dir: PathBuf,
    pub timeout: Duration,
}

/// How a boot ended.
pub(crate) struct VmOutcome {
    /// What the guest printed (`output.log`).
    pub output: String,
    /// `uname -r` inside the VM (empty if it never got that far).
    pub uname: String,
    /// The guest's exit status, if it got to write one.
    pub rc: Option<String>,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub console: PathBuf,
}

/// The lines that run every test binary, in their package's directory as `cargo
/// test` does.
fn tests_body(tests: &[(String, PathBuf)], test_args: &[String]) -> String {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "cd {} || exit 1",
        quote_path(&cmd::workspace_root().join("tests"))
    );
    let args: Vec<String> = test_args.iter().map(|a| shell_quote(a)).collect();
    for (name, path) in tests {
        let _ = writeln!(body, "echo \"vm-test: test binary {name}\"");
        let _ = writeln!(
            body,
            "{} --test-threads=1 {} || status=1",
            quote_path(path),
            args.join(" ")
        );
    }
    body
}

/// The script the VM runs: [`VmRun::guest_script`] fills in its `{{NAME}}`s.
const GUEST_SCRIPT: &str = include_str!("vm/guest.sh");

/// `template` with every `{{NAME}}` replaced by its value in `values`, in one pass
/// (a value is never read for placeholders).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut filled = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        filled.push_str(&rest[..start]);
        let end = start
            + rest[start..]
                .find("}}")
                .expect("a placeholder ends with }}");
        let name = &rest[start + 2..end];
        let (_, value) = values
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no value for the placeholder {name} of the guest script"));
        filled.push_str(value);
        rest = &rest[end + 2..];
    }
    filled.push_str(rest);
    filled
}

impl VmRun<'_> {
    /// The script the VM runs (as root), from `vm/guest.sh`; it writes the job's
    /// output to `output.log` in the run's directory and its exit status to `rc`.
    fn guest_script(&self) -> String {
        fill(
            GUEST_SCRIPT,
            &[
                ("OUT", &quote_path(&self.dir)),
                ("DAEMON", &quote_path(self.daemon)),
                ("BACKEND", self.backend),
                ("WORKSPACE", &quote_path(cmd::workspace_root())),
                ("BODY", self.body.trim_end_matches('\n')),
            ],
        )
    }

    /// Boots the VM and runs the job. A guest kernel that dies before the job starts
    /// is booted again: under software emulation, patching kernel text on one vCPU
    /// while another executes it occasionally ends in an oops early in boot (seen:
    /// `int3` in `sched_clock_cpu` at 2 s), which says nothing about the job.
    pub fn run(&self) -> Result<VmOutcome> {
        step(format!(
            "kernel {} with the {} backend",
            self.kernel.version, self.backend
        ));
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing {}", self.dir.display()))?;
        }
        for attempt in 1..=BOOT_ATTEMPTS {
            let outcome = self.boot()?;
            let never_started = !outcome.timed_out && outcome.uname.is_empty();
            if !never_started || attempt == BOOT_ATTEMPTS {
                return Ok(outcome);
            }
            let kept = self.dir.join(format!("console.boot-{attempt}.log"));
            let _ = fs::rename(&outcome.console, &kept);
            println!(
                "    the VM died before the job started (console: {}); booting again",
                kept.display()
            );
        }
        unreachable!("the last attempt returns")
    }

    /// One boot. What an earlier boot of this run left is removed, but for the
    /// consoles of boots that died.
    fn boot(&self) -> Result<VmOutcome> {
        if self.dir.exists() {
            for entry in fs::read_dir(&self.dir)
                .with_context(|| format!("reading {}", self.dir.display()))?
            {
                let path = entry?.path();
                let is_earlier_boot = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("console.boot-"));
                if is_earlier_boot {
                    continue;
                }
                if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                }
                .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let script = self.dir.join("guest.sh");
        fs::write(&script, self.guest_script())
            .with_context(|| format!("writing {}", script.display()))?;
        let console_path = self.dir.join("console.log");
        let console = fs::File::create(&console_path)
            .with_context(|| format!("creating {}", console_path.display()))?;
        let mut command = Command::new(self.vng);
        command
            .arg("--run")
            .arg(&self.kernel.vmlinuz)
            .args([
                "--disable-kvm",
                "--user",
                "root",
                "--memory",
                "2G",
                "--cpus",
                "2",
            ])
            // One host thread runs both vCPUs. With a thread per vCPU (QEMU's default
            // for x86), a vCPU can run code another vCPU has just rewritten from a stale
            // translation: when the kernel patches its text (attaching an fentry
            // program, flipping a static key) it first writes an int3, and a vCPU that
            // reaches the int3 after the patch is done oopses (`Oops: int3`, seen on
            // 6.12.118 in `tty_ioctl` and `syscall_trace_enter`).
            // (`=`: the value starts with a dash.)
            .arg("--qemu-opts=-accel tcg,thread=single")
            // The kernel log goes to console.log: what to read when a VM dies.
            .arg("--verbose")
            .arg(format!("--rwdir={}", self.dir.display()))
            .arg("--exec")
            .arg(format!("bash {}", quote_path(&script)))
            .current_dir(cmd::workspace_root())
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            // Its own process group, so that a timeout or an interrupt of this
            // process ends QEMU too (see `follow`).
            .process_group(0);
        println!("    $ {}", cmd::display(&command));
        println!(
            "    (VM console: {}; test output follows)",
            console_path.display()
        );
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::display(&command)))?;
        let timed_out = self.follow(child)?;
        let elapsed = started.elapsed();

        Ok(VmOutcome {
            output: fs::read_to_string(self.dir.join("output.log")).unwrap_or_default(),
            uname: fs::read_to_string(self.dir.join("kernel"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            rc: fs::read_to_string(self.dir.join("rc"))
                .ok()
                .map(|s| s.trim().to_string()),
            timed_out,
            elapsed,
            console: console_path,
        })
    }

    /// Shows `output.log` as the VM writes it, until the VM ends or the time is up
    /// (then kills it, returning true).
    fn follow(&self, mut child: Child) -> Result<bool> {
        let log = self.dir.join("output.log");
        let deadline = Instant::now() + self.timeout;
        let mut shown = 0u64;
        let mut partial = String::new();
        let show = |shown: &mut u64, partial: &mut String, last: bool| {
            let Ok(mut file) = fs::File::open(&log) else {
                return;
            };
            if file.seek(SeekFrom::Start(*shown)).is_err() {
                return;
            }
            let mut fresh = Vec::new();
            if file.read_to_end(&mut fresh).is_err() {
                return;
            }
            *shown += fresh.len() as u64;
            partial.push_str(&String::from_utf8_lossy(&fresh));
            let mut out = std::io::stdout().lock();
            while let Some(end) = partial.find('\n') {
                let line: String = partial.drain(..=end).collect();
                let _ = write!(out, "    | {line}");
            }
            if last && !partial.is_empty() {
                let _ = writeln!(out, "    | {partial}");
                partial.clear();
            }
            let _ = out.flush();
        };
        loop {
            if child.try_wait().context("waiting for vng")?.is_some() {
                show(&mut shown, &mut partial, true);
                return Ok(false);
            }
            show(&mut shown, &mut partial, false);
            if interrupt::interrupted() {
                println!("    interrupted: killing the VM");
                stop(&mut child);
                bail!("interrupted");
            }
            if Instant::now() >= deadline {
                println!(
                    "    timed out after {} min: killing the VM",
                    self.timeout.as_secs() / 60
                );
                stop(&mut child);
                show(&mut shown, &mut partial, true);
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Kills vng and QEMU (the process group made for them) and reaps vng.
fn stop(child: &mut Child) {
    let _ = rustix::process::kill_process_group(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::KILL,
    );
    let _ = child.wait();
}

/// libtest's counts, summed over the test binaries of one run, and `binary: test name`
/// of every failed test; each binary's output follows the guest script's line
/// `vm-test: test binary NAME`.
fn read_test_output(output: &str) -> (libtest::Counts, Vec<String>) {
    let mut counts = libtest::Counts::default();
    let mut binary = "";
    let mut failures = BTreeSet::new();
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("vm-test: test binary ") {
            binary = name.trim();
        }
        if let Some(name) = counts.read_line(line) {
            failures.insert(format!("{binary}: {name}"));
        }
    }
    (counts, failures.into_iter().collect())
}

struct RunResult {
    kernel: String,
    /// `uname -r` inside the VM (empty if it never got that far).
    uname: String,
    backend: &'static str,
    counts: libtest::Counts,
    /// `binary: test name` of every failed test.
    failures: Vec<String>,
    elapsed: Duration,
    /// Why the run is not a success.
    problem: Option<String>,
    dir: PathBuf,
}

impl RunResult {
    fn new(run: &VmRun<'_>, outcome: VmOutcome) -> Self {
        let (counts, failures) = read_test_output(&outcome.output);
        let problem = match (outcome.timed_out, outcome.rc.as_deref()) {
            (true, _) => Some(format!(
                "timed out after {} min",
                run.timeout.as_secs() / 60
            )),
            (false, None) => Some(format!(
                "the VM ended before the tests did (see {})",
                outcome.console.display()
            )),
            (false, Some("0")) if counts.passed == 0 => Some("no test ran".to_string()),
            (false, Some("0")) => None,
            (false, Some(_)) => Some("tests failed".to_string()),
        };
        RunResult {
            kernel: run.kernel.version.clone(),
            uname: outcome.uname,
            backend: run.backend,
            counts,
            failures,
            elapsed: outcome.elapsed,
            problem,
            dir: run.dir.clone(),
        }
    }

    fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

fn summary(results: &[RunResult], total: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "==> kernel matrix");
    let _ = writeln!(
        s,
        "    {:<24} {:<11} {:<7} {:>6} {:>6} {:>7} {:>9}",
        "kernel", "backend", "result", "passed", "failed", "ignored", "VM time"
    );
    for r in results {
        let kernel = if r.uname.is_empty() || r.uname == r.kernel {
            r.kernel.clone()
        } else {
            format!("{} (uname {})", r.kernel, r.uname)
        };
        let _ = writeln!(
            s,
            "    {kernel:<24} {:<11} {:<7} {:>6} {:>6} {:>7} {:>7.0} s",
            r.backend,
            if r.ok() { "ok" } else { "FAILED" },
            r.counts.passed,
            r.counts.failed,
            r.counts.ignored,
            r.elapsed.as_secs_f64()
        );
    }
    for r in results.iter().filter(|r| !r.ok()) {
        let _ = writeln!(
            s,
            "    {} / {}: {} (logs: {})",
            r.kernel,
            r.backend,
            r.problem.as_deref().unwrap_or_default(),
            r.dir.display()
        );
        for failure in &r.failures {
            let _ = writeln!(s, "        failed: {failure}");
        }
    }
    let _ = writeln!(s, "    total {:.0} s", total.as_secs_f64());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_kernel_versions_numerically() {
        let newest = ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.1.0-10-amd64"]
            .into_iter()
            .max_by_key(|v| version_key(v));
        assert_eq!(newest, Some("6.1.0-56-amd64"));
        assert!(version_key("6.12.117+deb12-amd64") > version_key("6.12.99+deb12-amd64"));
    }

    #[test]
    fn counts_libtest_results_across_binaries() {
        let output = "vm-test: test binary ssh\n\
                      running 2 tests\n\
                      test ssh_input ... ok\n\
                      test ssh_exit ... FAILED\n\
                      test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.1s\n\
                      vm-test: test binary local\n\
                      test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 2.0s\n";
        let (counts, failures) = read_test_output(output);
        assert_eq!(
            counts,
            libtest::Counts {
                passed: 4,
                failed: 1,
                ignored: 1
            }
        );
        assert_eq!(failures, ["ssh: ssh_exit"]);
    }

    #[test]
    fn fills_the_guest_script() {
        let kernel = Kernel {
            version: "6.1.0-56-amd64".into(),
            vmlinuz: "/cache/vmlinuz".into(),
        };
        let tests = [("writes".to_string(), PathBuf::from("/t/writes-0123"))];
        let run = VmRun {
            vng: Path::new("/usr/bin/vng"),
            kernel: &kernel,
            backend: "tracepoint",
            daemon: Path::new("/w/target/debug/session-monitor"),
            body: tests_body(&tests, &["it's".to_string()]),
            dir: PathBuf::from("/w/target/vm-kernels/runs/x y"),
            timeout: Duration::from_secs(60),
        };
        let script = run.guest_script();
        assert!(!script.contains("{{"), "a placeholder is left:\n{script}");
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "#!/bin/bash");
        for line in [
            "out='/w/target/vm-kernels/runs/x y'",
            "export SESSION_MONITOR_BIN=/w/target/debug/session-monitor",
            "export SESSION_MONITOR_BACKEND=tracepoint",
            "/t/writes-0123 --test-threads=1 'it'\\''s' || status=1",
        ] {
            assert!(lines.contains(&line), "no line {line:?} in:\n{script}");
        }
        // The job detaches from the console's login, which waits for `rc`; `rc` is
        // written last, after everything the job printed.
        let detach = lines
            .iter()
            .position(|l| l.contains("setsid -f bash \"$0\""));
        let output = lines
            .iter()
            .position(|l| l.starts_with("exec >\"$out/output.log\""));
        assert!(detach.is_some() && detach < output, "{script}");
        assert_eq!(lines.last(), Some(&r#"echo "$status" >"$out/rc""#));
    }

    #[test]
    #[should_panic(expected = "no value for the placeholder NOPE")]
    fn a_placeholder_without_a_value_is_a_bug() {
        fill("a {{NOPE}} b", &[("OUT", "x")]);
    }

    #[test]
    fn fills_placeholders_in_one_pass() {
        assert_eq!(
            fill("{{A}}-{{B}}", &[("A", "{{B}}"), ("B", "b")]),
            "{{B}}-b"
        );
    }

    #[test]
    fn quotes_for_the_guest_shell() {
        assert_eq!(shell_quote("/work/main/target"), "/work/main/target");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("6.12.117+deb12-amd64"), "6.12.117+deb12-amd64");
    }
}
