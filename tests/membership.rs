//! A login is every process forked from it: the kernel copies a process's login to
//! each new process at fork (map `PROCS`), so `setsid`, a double fork or a new session
//! do not lose it; threads are not processes; a process leaves the map when its last
//! thread exits. What a login's transport writes into pipes and AF_UNIX sockets it
//! made is the login's input (map `LOGIN_ACTIVITY`); its writes anywhere else are not.
//!
//! The maps of the daemon under test are read (and, to make a helper process a
//! transport, written) with bpftool, found through the daemon's own descriptors, so
//! that no other program's maps are ever touched.

use std::{
    collections::HashMap,
    fs::File,
    io::Write as _,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use harness::{Daemon, Kind, TempDir, TestUser, Tmux, Wait, process, test_guard};
use serde_json::Value;

/// `proc_flags` of the common crate.
const TRANSPORT: u32 = 4;
const WAIT: Duration = Duration::from_secs(20);

/// The id of the daemon's map called `name`, from the BPF map descriptors it holds.
fn map_id(daemon: &Daemon, name: &str) -> u32 {
    let pid = daemon.pid();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("daemon's descriptors");
    for fd in fds.filter_map(Result::ok) {
        let is_map = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let show = bpftool(&["map", "show", "id", &id.to_string()]);
        if show["name"] == name {
            return id;
        }
    }
    panic!("the daemon (pid {pid}) holds no map named {name}");
}

fn bpftool(args: &[&str]) -> Value {
    let out = process::run(Command::new("bpftool").arg("-j").args(args));
    assert!(
        out.status.success(),
        "bpftool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}"))
}

fn hex(b: &[u8]) -> Vec<String> {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `bpftool map update` of entry `key` of map `id`.
fn update(id: u32, key: &[u8], value: &[u8]) {
    let id = id.to_string();
    let (key, value) = (hex(key), hex(value));
    let mut args = vec!["map", "update", "id", id.as_str(), "key", "hex"];
    args.extend(key.iter().map(String::as_str));
    args.extend(["value", "hex"]);
    args.extend(value.iter().map(String::as_str));
    let out = process::run(Command::new("bpftool").args(&args));
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bytes of a `"key"` or `"value"` of `bpftool map dump` (maps without BTF).
fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a byte array: {v}"))
        .iter()
        .map(|b| {
            let s = b.as_str().unwrap_or_default();
            u8::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex byte")
        })
        .collect()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// One entry of `PROCS` (`ProcState`: login, last UDP receive, flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    login: u64,
    flags: u32,
}

/// The kernel's maps of one daemon.
struct Maps {
    procs: u32,
    login_activity: u32,
    /// The probes' bitmap of transports, in front of `PROCS` (one bit per pid).
    transport_pids: u32,
    /// The gate in front of `PROCS` on every fork and exit: the processes the daemon
    /// put there, and those the probes put there at fork (one bit per pid each).
    adopted_pids: u32,
    forked_pids: u32,
}

impl Maps {
    fn of(daemon: &Daemon) -> Self {
        Self {
            procs: map_id(daemon, "PROCS"),
            login_activity: map_id(daemon, "LOGIN_ACTIVITY"),
            transport_pids: map_id(daemon, "TRANSPORT_PIDS"),
            adopted_pids: map_id(daemon, "ADOPTED_PIDS"),
            forked_pids: map_id(daemon, "FORKED_PIDS"),
        }
    }

    /// The word of bitmap `map` that holds `pid`'s bit, and the bit.
    fn pid_word(map: u32, pid: u32) -> (u64, u64) {
        let word = pid / 64;
        let id = map.to_string();
        let key = hex(&word.to_le_bytes());
        let mut args = vec!["map", "lookup", "id", id.as_str(), "key", "hex"];
        args.extend(key.iter().map(String::as_str));
        let lookup = bpftool(&args);
        (u64_at(&bytes(&lookup["value"]), 0), 1 << (pid % 64))
    }

    /// Sets `pid`'s bit in bitmap `map`, keeping the others.
    fn set_pid_bit(map: u32, pid: u32) {
        let (bits, bit) = Self::pid_word(map, pid);
        update(map, &(pid / 64).to_le_bytes(), &(bits | bit).to_le_bytes());
    }

    /// Whether `pid`'s bit is set in `ADOPTED_PIDS` and in `FORKED_PIDS`.
    fn gate(&self, pid: u32) -> (bool, bool) {
        let set = |map| {
            let (bits, bit) = Self::pid_word(map, pid);
            bits & bit != 0
        };
        (set(self.adopted_pids), set(self.forked_pids))
    }

    fn procs(&self) -> HashMap<u32, Member> {
        let dump = bpftool(&["map", "dump", "id", &self.procs.to_string()]);
        dump.as_array()
            .expect("a dump is an array")
            .iter()
            .map(|e| {
                let key = bytes(&e["key"]);
                let value = bytes(&e["value"]);
                let member = Member {
                    login: u64_at(&value, 0),
                    flags: u32_at(&value, 16),
                };
                (u32_at(&key, 0), member)
            })
            .collect()
    }

    fn member(&self, pid: u32) -> Option<Member> {
        self.procs().get(&pid).copied()
    }

    /// Makes `pid` a member of `login` with `flags`, as the daemon's `adopt` does:
    /// its bit in `ADOPTED_PIDS` (and a transport's in `TRANSPORT_PIDS`) first,
    /// then its entry in `PROCS`.
    fn adopt(&self, pid: u32, login: u64, flags: u32) {
        Self::set_pid_bit(self.adopted_pids, pid);
        if flags & TRANSPORT != 0 {
            Self::set_pid_bit(self.transport_pids, pid);
        }
        let mut value = Vec::new();
        value.extend_from_slice(&login.to_le_bytes());
        value.extend_from_slice(&0u64.to_le_bytes());
        value.extend_from_slice(&flags.to_le_bytes());
        value.extend_from_slice(&0u32.to_le_bytes());
        update(self.procs, &pid.to_le_bytes(), &value);
    }

    /// `(input_bytes, input_count)` of a login's input without a terminal.
    fn login_input(&self, login: u64) -> Option<(u64, u64)> {
        let dump = bpftool(&["map", "dump", "id", &self.login_activity.to_string()]);
        dump.as_array()?.iter().find_map(|e| {
            let key = bytes(&e["key"]);
            (u64_at(&key, 0) == login).then(|| {
                let value = bytes(&e["value"]);
                (u64_at(&value, 8), u64_at(&value, 16))
            })
        })
    }
}

/// One probe's counters from `status --json`.
fn probe_counter(daemon: &Daemon, probe: &str, stat: &str) -> u64 {
    let status = daemon.status();
    status["counters"]["probes"]
        .as_array()
        .and_then(|probes| probes.iter().find(|p| p["probe"] == probe))
        .and_then(|p| p[stat].as_u64())
        .unwrap_or_else(|| panic!("no {probe}.{stat} in status: {status:#}"))
}

/// A Python process driven line by line through its stdin. It answers in a regular
/// file, not a pipe: as a transport, its writes into a pipe would be input.
const HELPER: &str = r#"
import os, socket, sys, threading, time

out = open(sys.argv[1], "a", buffering=1)
stop = threading.Event()
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "threads":
        ids = []
        ready = threading.Barrier(4)
        def worker():
            ids.append(threading.get_native_id())
            ready.wait()
            stop.wait()
        for _ in range(3):
            threading.Thread(target=worker, daemon=True).start()
        ready.wait()
        out.write("threads " + " ".join(map(str, ids)) + "\n")
    elif cmd[0] == "fork":
        pid = os.fork()
        if pid == 0:
            os.setsid()
            time.sleep(600)
            os._exit(0)
        out.write("fork %d\n" % pid)
    elif cmd[0] == "fork-exit":
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        out.write("fork-exit %d\n" % pid)
    elif cmd[0] == "exec-in-thread":
        out.write("exec-in-thread\n")
        out.flush()
        threading.Thread(target=lambda: os.execv("/bin/sleep", ["sleep", "600"])).start()
        time.sleep(600)
    elif cmd[0] == "writes":
        r, w = os.pipe()
        for _ in range(3):
            os.write(w, b"p" * 10)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for _ in range(2):
            os.write(a.fileno(), b"u" * 7)
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        tcp = socket.create_connection(server.getsockname())
        for _ in range(4):
            os.write(tcp.fileno(), b"t" * 5)
        null = os.open("/dev/null", os.O_WRONLY)
        for _ in range(4):
            os.write(null, b"n" * 5)
        for _ in range(4):
            out.write("file\n")
        out.write("writes done\n")
    elif cmd[0] == "child-writes":
        pid = os.fork()
        if pid == 0:
            r, w = os.pipe()
            for _ in range(3):
                os.write(w, b"c" * 9)
            os._exit(0)
        os.waitpid(pid, 0)
        out.write("child-writes done\n")
"#;

struct Helper {
    child: Child,
    stdin: ChildStdin,
    out: PathBuf,
    _dir: TempDir,
}

impl Helper {
    fn start() -> Helper {
        Self::start_as(None)
    }

    /// The helper, run as `user` if given (root otherwise).
    fn start_as(user: Option<&TestUser>) -> Helper {
        let dir = TempDir::new("membership");
        let script = dir.write("helper.py", HELPER);
        let out = dir.write("out.txt", "");
        let err = dir.join("err.txt");
        let mut command = Command::new("/usr/bin/python3");
        if let Some(user) = user {
            dir.chown(user.uid(), user.gid());
            for file in [&script, &out] {
                std::os::unix::fs::chown(file, Some(user.uid()), Some(user.gid()))
                    .expect("chown helper file");
            }
            command.uid(user.uid()).gid(user.gid());
        }
        let mut child = command
            .arg(&script)
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(File::create(err).expect("create helper stderr"))
            .spawn()
            .expect("start /usr/bin/python3 (Debian package python3)");
        let stdin = child.stdin.take().expect("piped stdin");
        Helper {
            child,
            stdin,
            out,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a command and waits for the answer line that starts with its name.
    fn ask(&mut self, command: &str) -> Vec<String> {
        writeln!(self.stdin, "{command}").expect("write to helper");
        self.stdin.flush().expect("flush");
        let out = self.out.clone();
        Wait::new(format!("the helper's answer to `{command}`"))
            .timeout(WAIT)
            .until(|| {
                let text = std::fs::read_to_string(&out).ok()?;
                let line = text.lines().rev().find(|l| l.starts_with(command))?;
                Some(line.split_whitespace().skip(1).map(String::from).collect())
            })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn wait_gone(maps: &Maps, pid: u32, what: &str) {
    Wait::new(format!("{what} (pid {pid}) to leave PROCS"))
        .timeout(WAIT)
        .until(|| maps.member(pid).is_none().then_some(()));
}

#[test]
fn processes_forked_from_a_session_stay_in_its_login_wherever_they_go() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = Daemon::start();
    let maps = Maps::of(&daemon);
    let tmux = Tmux::as_user(&user);
    let pane = tmux.new_session("members", "");
    pane.wait_for_shell(WAIT);
    let session = daemon.wait_for_session("the local session", WAIT, |s| {
        s.user == user.name() && s.kind == Kind::Local
    });
    let login = u64::from_str_radix(&session.id, 16).expect("a session id is hex");
    Wait::new("the session's leader in its login")
        .timeout(WAIT)
        .until(|| (maps.member(session.leader_pid)?.login == login).then_some(()));

    // Double fork, new session: the way out of a session that logind does not scope.
    let pid_file = user.home().join("escaped.pid");
    pane.type_line(&format!(
        "( setsid sh -c 'sleep 600 & echo $! > {}' & )",
        pid_file.display()
    ));
    let escaped: u32 = Wait::new("the escaped process's pid")
        .timeout(WAIT)
        .until(|| std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok());
    let proc = process::get(escaped).expect("the escaped process runs");
    assert_ne!(proc.ppid, session.leader_pid, "{proc:?}");
    let sid =
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(escaped as i32))).expect("getsid");
    assert_ne!(
        sid.as_raw() as u32,
        session.leader_pid,
        "setsid should have left the session"
    );
    assert_eq!(
        maps.member(escaped),
        Some(Member { login, flags: 0 }),
        "a process forked from the login stays in it, without flags"
    );

    // What serves the session (the tmux server) is not forked from it.
    let server = tmux.server_pid().expect("tmux server");
    assert!(
        maps.member(server).is_none_or(|m| m.login != login),
        "the tmux server is not a member of the login it serves: {:?}",
        maps.member(server)
    );
    assert!(
        maps.member(std::process::id()).is_none(),
        "the test itself is no member of anything"
    );

    kill(escaped);
    wait_gone(&maps, escaped, "the escaped process, killed");
    assert!(probe_counter(&daemon, "process_fork", "matched") >= 3);
}

#[test]
fn threads_are_not_processes_and_a_process_leaves_with_its_last_thread() {
    let _guard = test_guard!();
    let daemon = Daemon::start();
    let maps = Maps::of(&daemon);
    let mut helper = Helper::start();
    let pid = helper.pid();
    let login = 0x5e55_1017_0001;
    maps.adopt(pid, login, 0);
    let member = Some(Member { login, flags: 0 });

    let before = maps.procs().len();
    let threads: Vec<u32> = helper
        .ask("threads")
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(threads.len(), 3);
    let procs = maps.procs();
    for tid in &threads {
        assert!(
            !procs.contains_key(tid),
            "thread {tid} got an entry of its own"
        );
    }
    assert!(procs.len() <= before + 1, "{before} -> {}", procs.len());

    // The gate in front of PROCS opens for every member: the adopted process by
    // the daemon's bit, its child by the probes' (set at fork), and the child's
    // closes when it exits.
    assert!(
        maps.gate(pid).0,
        "an adopted process has its bit in ADOPTED_PIDS"
    );
    let child: u32 = helper.ask("fork")[0].parse().unwrap();
    assert_eq!(maps.member(child), member, "a forked child joins the login");
    assert!(
        maps.gate(child).1,
        "a forked member has its bit in FORKED_PIDS"
    );
    kill(child);
    wait_gone(&maps, child, "the killed child");
    assert!(!maps.gate(child).1, "an exited member's bit is cleared");

    let exited: u32 = helper.ask("fork-exit")[0].parse().unwrap();
    wait_gone(&maps, exited, "a child that exited");
    assert!(!maps.gate(exited).1, "an exited member's bit is cleared");

    // A thread calls execve: the old leader thread exits, the process lives on under
    // the same pid, and stays in its login.
    helper.ask("exec-in-thread");
    Wait::new("the helper to become `sleep`")
        .timeout(WAIT)
        .until(|| (process::get(pid)?.comm == "sleep").then_some(()));
    assert_eq!(
        maps.member(pid),
        member,
        "a process whose leader thread exited lives on, in its login"
    );
    kill(pid);
    wait_gone(&maps, pid, "the helper, killed");
}

#[test]
fn a_transports_pipe_and_unix_socket_writes_are_its_logins_input() {
    let _guard = test_guard!();
    let daemon = Daemon::start();
    let maps = Maps::of(&daemon);
    let mut helper = Helper::start();
    let login = 0x5e55_1017_0002;
    maps.adopt(helper.pid(), login, TRANSPORT);
    assert_eq!(maps.login_input(login), None, "no input before any write");

    // 3 pipe writes of 10 bytes, 2 AF_UNIX writes of 7; TCP, /dev/null and a file
    // are not input.
    helper.ask("writes done");
    let expected = (3 * 10 + 2 * 7, 5);
    Wait::new("the login's input")
        .timeout(WAIT)
        .until(|| (maps.login_input(login) == Some(expected)).then_some(()));
    // The first input sends a notice at once.
    Wait::new("a login input notice")
        .timeout(WAIT)
        .until(|| (probe_counter(&daemon, "pipe_input", "sent") >= 1).then_some(()));
    assert_eq!(probe_counter(&daemon, "pipe_input", "matched"), 5);

    // A child of the transport is in the login but is no transport.
    helper.ask("child-writes done");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        maps.login_input(login),
        Some(expected),
        "writes by a transport's child are not input"
    );
}

#[test]
fn a_revoked_users_transport_is_stopped_at_its_first_pipe_write() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = Daemon::start();
    let maps = Maps::of(&daemon);
    let out = daemon.cli(["revoke", user.name(), "--reason", "membership test"]);
    assert!(out.status.success(), "revoke failed: {out:?}");
    if daemon.status()["kernel_revocation"] != true {
        panic!(
            "this kernel refuses in-kernel revocation: {:#}",
            daemon.status()
        );
    }

    // A transport of the revoked user that starts after the revocation (a new login).
    let mut helper = Helper::start_as(Some(&user));
    let pid = helper.pid();
    maps.adopt(pid, 0x5e55_1017_0003, TRANSPORT);
    writeln!(helper.stdin, "writes").expect("write to helper");
    helper.stdin.flush().expect("flush");
    let status = Wait::new("the revoked transport to be stopped")
        .timeout(WAIT)
        .until(|| helper.child.try_wait().ok().flatten());
    assert_eq!(
        status.signal(),
        Some(nix::sys::signal::Signal::SIGKILL as i32),
        "{status:?}"
    );
    let answers = std::fs::read_to_string(&helper.out).unwrap_or_default();
    assert!(
        !answers.contains("writes done"),
        "the transport went on writing: {answers}"
    );
    assert!(daemon.status()["counters"]["revoke_signals"].as_u64() >= Some(1));
    Wait::new("the audit record of the stopped input")
        .timeout(WAIT)
        .until(|| {
            daemon
                .audit()
                .iter()
                .any(|r| r["event"] == "input_blocked" && r["pid"] == pid)
                .then_some(())
        });
}
