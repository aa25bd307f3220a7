//! Real container runtimes: podman (with runc and the cgroupfs manager, as this
//! machine has no systemd as pid 1) and a dockerd started for the test. No registry
//! is needed: podman runs containers on the host's root as a read-only lower layer
//! (`--rootfs /:O`), and the one image the tests need (a Debian base, for docker and
//! for the daemon's image) is made with debootstrap once and cached under
//! `target/containers/`.
//!
//! Podman keeps its storage under `target/containers/podman` (the cached images stay
//! there); containers are named `smt-<test pid>-...` and removed on drop, also when
//! a test panics. A [`Docker`] daemon keeps everything in a temporary directory and
//! is stopped on drop.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{process, tempdir::TempDir, wait::Wait};

/// Root cannot raise rlimits on these machines, and crun refuses their hybrid cgroup
/// layout: limits podman can set, runc, and the cgroupfs manager (no systemd).
const CONTAINERS_CONF: &str = "[containers]\n\
default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
[engine]\n\
runtime = \"runc\"\n\
cgroup_manager = \"cgroupfs\"\n\
events_logger = \"file\"\n";

/// The tag of the Debian base image made with debootstrap.
pub const BASE_IMAGE: &str = "localhost/smt-debian:bookworm";
/// The tag of the daemon's image built from the repository's Dockerfile.
pub const DAEMON_IMAGE: &str = "localhost/session-monitor:test";

/// Where container images and podman's storage are cached between test runs.
pub fn cache_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/containers");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// `program` in /usr/bin or /usr/sbin (Debian's), never a same-named program earlier
/// in PATH (a `docker` client in /usr/local/bin may be another version).
fn debian_program(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found in /usr/bin or /usr/sbin: install Debian's podman, runc, \
                 docker.io and debootstrap (`cargo xtask setup --purpose test` does)"
            )
        })
}

/// A name unique to this test process: `smt-<pid>-<label>-<n>`, recognisable by the
/// stale-run cleanup.
fn unique_name(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "smt-{}-{label}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Podman with this machine's configuration and storage under `target/containers`.
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    pub fn new() -> Self {
        let dir = TempDir::new("podman");
        dir.write("containers.conf", CONTAINERS_CONF);
        let graphroot = cache_dir().join("podman");
        dir.write(
            "storage.conf",
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"/run/smt-podman\"\n",
                graphroot.display()
            ),
        );
        Self { dir }
    }

    /// `podman` with this configuration.
    pub fn command(&self) -> Command {
        let mut command = Command::new(debian_program("podman"));
        command
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"));
        command
    }

    /// Runs podman, which must succeed; its standard output, trimmed.
    pub fn run_ok<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> String {
        process::run_ok(self.command().args(args))
            .trim()
            .to_string()
    }

    /// A container on the host's root (a read-only lower layer with a writable one
    /// on top) whose main process sleeps, with no network.
    pub fn run_on_host_root(&self, label: &str) -> Container<'_> {
        let name = unique_name(label);
        let id = self.run_ok([
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            "--rootfs",
            "/:O",
            "sleep",
            "infinity",
        ]);
        Container {
            engine: Engine::Podman(self),
            id,
            name,
        }
    }

    /// The Debian base image, imported from the cached debootstrap tree.
    pub fn base_image(&self) -> &'static str {
        let exists = self
            .command()
            .args(["image", "exists", BASE_IMAGE])
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            let tarball = base_tarball();
            self.run_ok(["import".as_ref(), tarball.as_os_str(), BASE_IMAGE.as_ref()]);
        }
        BASE_IMAGE
    }

    /// Builds the daemon's image from the repository's Dockerfile: its `prebuilt`
    /// stage, on the Debian base, with the daemon binary the tests run
    /// (`$SESSION_MONITOR_BIN`) as the only file of the build context.
    /// Built once per test process.
    pub fn build_daemon_image(&self) -> &'static str {
        static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if *built {
            return DAEMON_IMAGE;
        }
        let base = self.base_image();
        let context = TempDir::new("image-context");
        std::fs::copy(crate::daemon_binary(), context.join("session-monitor"))
            .expect("copying the daemon binary into the build context");
        let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
        self.run_ok([
            "build".as_ref(),
            "--quiet".as_ref(),
            "--target".as_ref(),
            "prebuilt".as_ref(),
            "--build-arg".as_ref(),
            format!("RUNTIME_IMAGE={base}").as_ref(),
            "-f".as_ref(),
            dockerfile.as_os_str(),
            "-t".as_ref(),
            DAEMON_IMAGE.as_ref(),
            context.path().as_os_str(),
        ]);
        // The image this tag named before is left untagged: removed, so that the
        // cache does not grow by an image per run.
        self.run_ok(["image", "prune", "-f"]);
        *built = true;
        DAEMON_IMAGE
    }

    /// Starts a container from `args` (`podman run -d --name NAME ARGS...`).
    pub fn run_detached(&self, label: &str, args: &[String]) -> Container<'_> {
        let name = unique_name(label);
        let mut command = self.command();
        command.args(["run", "-d", "--name", &name]).args(args);
        let id = process::run_ok(&mut command).trim().to_string();
        Container {
            engine: Engine::Podman(self),
            id,
            name,
        }
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

/// A dockerd of the test's own, on a private socket with its data in a temporary
/// directory, without iptables or a bridge (containers get no network). Stopped, and
/// its directory removed, on drop.
pub struct Docker {
    dir: TempDir,
    socket: PathBuf,
    child: Child,
}

impl Docker {
    pub fn start() -> Self {
        let dir = TempDir::new("docker");
        let socket = dir.join("docker.sock");
        let log = File::create(dir.join("dockerd.log")).expect("dockerd log");
        let child = Command::new(debian_program("dockerd"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--containerd-namespace")
            .arg(format!("smt-{}", std::process::id()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let mut docker = Self { dir, socket, child };
        let ready = Wait::new("dockerd to answer")
            .timeout(Duration::from_secs(60))
            .poll(Duration::from_millis(200))
            .try_until_ok(|| {
                if let Ok(Some(status)) = docker.child.try_wait() {
                    return Err(format!("dockerd exited ({status})"));
                }
                let out = process::run(docker.command().arg("version"));
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            });
        if let Err(message) = ready {
            panic!("{message}\n{}", docker.log());
        }
        docker
    }

    /// Debian's `docker` client, talking to this daemon.
    pub fn command(&self) -> Command {
        let mut command = Command::new(debian_program("docker"));
        command
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()));
        command
    }

    pub fn run_ok<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> String {
        process::run_ok(self.command().args(args))
            .trim()
            .to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Imports the Debian base tree as an image of this daemon.
    pub fn base_image(&self) -> &'static str {
        let tarball = base_tarball();
        self.run_ok(["import".as_ref(), tarball.as_os_str(), BASE_IMAGE.as_ref()]);
        BASE_IMAGE
    }

    /// A container of the base image whose main process sleeps, with no network.
    pub fn run_base(&self, label: &str) -> Container<'_> {
        let image = self.base_image();
        let name = unique_name(label);
        let id = self.run_ok([
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            image,
            "sleep",
            "infinity",
        ]);
        Container {
            engine: Engine::Docker(self),
            id,
            name,
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dockerd log ---\n{}", self.log());
        }
        // Containers first (their shims outlive dockerd otherwise), then dockerd.
        let ids = process::run(self.command().args(["ps", "-aq"]));
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = process::run(self.command().args(["rm", "-f"]).args(&ids));
        }
        process::signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        if process::wait_child(&mut self.child, Duration::from_secs(20)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // dockerd starts its own containerd: it ends with dockerd, unless killed.
        let needle = self.dir.path().display().to_string();
        let left: Vec<u32> = process::all()
            .into_iter()
            .map(|p| p.pid)
            .filter(|&pid| process::cmdline(pid).is_some_and(|c| c.contains(&needle)))
            .collect();
        process::kill_all(&left);
        unmount_below(self.dir.path());
    }
}

/// Removes the podman containers of dead test runs (`smt-<pid>-...`), when podman's
/// storage for the tests exists at all.
pub(crate) fn sweep_stale(dead: impl Fn(u32) -> bool) {
    if !cache_dir().join("podman").is_dir() {
        return;
    }
    let podman = Podman::new();
    let out = process::run(
        podman
            .command()
            .args(["ps", "-a", "--format", "{{.Names}}"]),
    );
    for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let pid = name
            .strip_prefix("smt-")
            .and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
        if pid.is_some_and(&dead) {
            eprintln!("cleanup: removing container {name} left by a dead test run");
            let _ = process::run(podman.command().args(["rm", "-f", "-t", "0", name]));
        }
    }
}

/// Unmounts whatever is still mounted below `dir` (overlay and shm mounts of a
/// killed dockerd), deepest first, so that the directory can be removed.
pub(crate) fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut below: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in below {
        let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
    }
}

enum Engine<'a> {
    Podman(&'a Podman),
    Docker(&'a Docker),
}

/// A running container, removed (with everything running in it) on drop.
pub struct Container<'a> {
    engine: Engine<'a>,
    id: String,
    name: String,
}

impl Container<'_> {
    /// The full 64-hex-digit id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The runtime as session-monitor names it.
    pub fn runtime(&self) -> &'static str {
        match self.engine {
            Engine::Podman(_) => "podman",
            Engine::Docker(_) => "docker",
        }
    }

    fn command(&self) -> Command {
        match self.engine {
            Engine::Podman(podman) => podman.command(),
            Engine::Docker(docker) => docker.command(),
        }
    }

    /// The shell command line of `<engine> exec -it [--user UID:GID] ID PROGRAM...`,
    /// for a tmux pane: an exec session on a terminal.
    pub fn exec_it_line(&self, user: Option<(u32, u32)>, program: &[&str]) -> String {
        let command = self.command();
        let mut words: Vec<String> = command
            .get_envs()
            .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
            .collect();
        if !words.is_empty() {
            words.insert(0, "env".into());
        }
        words.push(command.get_program().to_string_lossy().into_owned());
        words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
        words.extend(["exec".into(), "-it".into()]);
        if let Some((uid, gid)) = user {
            words.extend(["--user".into(), format!("{uid}:{gid}")]);
        }
        words.push(self.id.clone());
        words.extend(program.iter().map(|w| w.to_string()));
        crate::shell_join(words)
    }

    /// Starts `PROGRAM...` in the container without a terminal, detached
    /// (`exec -d`): another exec, which is no session.
    pub fn exec_detached(&self, program: &[&str]) {
        process::run_ok(self.command().args(["exec", "-d", &self.id]).args(program));
    }

    /// The host pid of the container's main process (0 when it is not running).
    pub fn main_pid(&self) -> u32 {
        let out =
            process::run_ok(
                self.command()
                    .args(["inspect", "-f", "{{.State.Pid}}", &self.id]),
            );
        out.trim().parse().unwrap_or(0)
    }

    /// True while the container runs.
    pub fn is_running(&self) -> bool {
        let out =
            process::run(
                self.command()
                    .args(["inspect", "-f", "{{.State.Running}}", &self.id]),
            );
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    }

    /// The host pids of every process in the container whose command line contains
    /// `needle`.
    pub fn processes_with(&self, needle: &str) -> Vec<u32> {
        let main = self.main_pid();
        if main == 0 {
            return Vec::new();
        }
        let Ok(own) = std::fs::read_link(format!("/proc/{main}/ns/pid")) else {
            return Vec::new();
        };
        process::all()
            .into_iter()
            .map(|p| p.pid)
            .filter(|&pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|ns| ns == own)
            })
            .filter(|&pid| process::cmdline(pid).is_some_and(|c| c.contains(needle)))
            .collect()
    }

    /// The container's log (its main process's output).
    pub fn logs(&self) -> String {
        let out = process::run(self.command().args(["logs", &self.id]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = process::run(self.command().args(["rm", "-f", "-t", "0", &self.id]));
    }
}

/// The Debian base tree (debootstrap minbase) as a tarball, made once and cached:
/// `target/containers/debian-bookworm-minbase.tar`. Made under a lock file, so that
/// two test processes never make it at once.
pub fn base_tarball() -> PathBuf {
    let dir = cache_dir();
    let tarball = dir.join("debian-bookworm-minbase.tar");
    let lock = File::create(dir.join("base.lock")).expect("base image lock");
    // SAFETY: flock on a descriptor we own, released when `lock` is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if tarball.is_file() {
        return tarball;
    }
    let tree = TempDir::new("debootstrap");
    let rootfs = tree.join("rootfs");
    let mirror = apt_debian_mirror();
    eprintln!("making the Debian base image with debootstrap from {mirror} (once, ~1 min)");
    process::run_ok(
        Command::new(debian_program("debootstrap"))
            .args(["--variant=minbase", "bookworm"])
            .arg(&rootfs)
            .arg(&mirror),
    );
    let partial = dir.join("debian-bookworm-minbase.tar.partial");
    process::run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            // apt's package lists and caches: half the tree, of no use in a test.
            .args([
                "--exclude=./var/lib/apt/lists/*",
                "--exclude=./var/cache/apt/*",
            ])
            .arg("-cf")
            .arg(&partial)
            .arg("."),
    );
    std::fs::rename(&partial, &tarball).expect("renaming the base tarball");
    tarball
}

/// The Debian mirror apt uses (deb822 `URIs:` or a `deb URL bookworm` line), else
/// deb.debian.org.
fn apt_debian_mirror() -> String {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sources") || name.ends_with(".list") {
                texts.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    mirror_from_sources(&texts.join("\n"))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// The first Debian archive URL (not the security archive) in apt's sources.
fn mirror_from_sources(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if let Some(uris) = line.strip_prefix("URIs:") {
                return uris.split_whitespace().next();
            }
            let mut words = line.split_whitespace();
            (words.next() == Some("deb"))
                .then(|| words.find(|w| w.starts_with("http")))
                .flatten()
        })
        .find(|url| url.trim_end_matches('/').ends_with("/debian"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_debian_mirror_in_apt_sources() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            mirror_from_sources(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let list = "deb http://security.debian.org/debian-security bookworm-security main\n\
                    deb [arch=amd64] http://ftp.de.debian.org/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_sources(list).as_deref(),
            Some("http://ftp.de.debian.org/debian/")
        );
        assert_eq!(mirror_from_sources("# nothing\n"), None);
    }
}
