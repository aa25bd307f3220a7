//! Hostile session leaders: a user's own processes and cgroups are input the daemon
//! must not trust. Each test plays an attack on the root daemon and checks that it
//! does nothing for the attacker — no write into a file the user may only read, no
//! policy swapped by a cgroup's name, no session hidden behind a leader named like
//! a getty, no signal to a process that merely reused a
//! session's pid — while the session itself is still handled as it should be. A
//! login that floods the probes is still ended on time.
//!
//! Every policy here limits only the test's own users.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use harness::{
    Daemon, Kind, Sshd, TempDir, TestUser, Tmux, Wait, process, shell_quote, test_guard,
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

const APPEAR: Duration = Duration::from_secs(20);

/// A policy limiting only `user`: `limits` are TOML lines of its rule.
fn policy_for(user: &TestUser, limits: &str) -> String {
    format!(
        "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n[[rule]]\nname = \"hostile\"\nusers = [\"{}\"]\n{limits}\n",
        user.name()
    )
}

/// The audit records of one session and event type.
fn records<'a>(audit: &'a [Value], session_id: &str, event: &str) -> Vec<&'a Value> {
    audit
        .iter()
        .filter(|r| r["event"] == event && r["session_id"] == session_id)
        .collect()
}

/// A root-owned file anybody may read and only root may write, in a directory
/// anybody may traverse: what `/etc/passwd` is to an attacker.
struct Victim {
    _dir: TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    mtime: SystemTime,
}

impl Victim {
    fn new() -> Self {
        let dir = TempDir::new("victim");
        dir.allow_traverse();
        let bytes = b"root:x:0:0:root:/root:/bin/bash\n# only root writes this file\n".to_vec();
        let path = dir.write("passwd", &bytes);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        Victim {
            _dir: dir,
            path,
            bytes,
            mtime,
        }
    }

    fn assert_untouched(&self) {
        let now = std::fs::read(&self.path).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&now),
            String::from_utf8_lossy(&self.bytes),
            "the daemon wrote into {}, a file the user may only read",
            self.path.display()
        );
        let meta = std::fs::metadata(&self.path).unwrap();
        assert_eq!(meta.modified().unwrap(), self.mtime, "mtime changed");
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
    }
}

/// A tmux server of `user` that stays up while it has no session, so that the
/// sessions the daemon ends do not take it along.
fn persistent_tmux(user: &TestUser) -> Tmux {
    let tmux = Tmux::as_user(user);
    tmux.run_ok(["start-server", ";", "set-option", "-g", "exit-empty", "off"]);
    tmux
}

/// Perl run as the pane's command (replacing the shell, so it is the session leader).
fn perl_leader(cpu: Option<usize>, script: &str, args: &[&str]) -> String {
    let pin = cpu.map_or(String::new(), |c| format!("taskset -c {c} "));
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    format!(
        "exec {pin}perl -MPOSIX -e {} {}",
        shell_quote(script),
        args.join(" ")
    )
}

/// Flips descriptors 0, 1 and 2 between the terminal and a read-only descriptor of
/// the victim, as fast as it can: a path like /proc/LEADER/fd/0 names one when
/// checked and maybe the other when opened.
const SWAPPER: &str = r#"
open(my $victim, "<", $ARGV[0]) or die "open: $!";
my $v = fileno($victim);
my $tty = POSIX::dup(0);
syswrite(STDOUT, "hostile leader ready\n");
while (1) {
    POSIX::dup2($v, 0); POSIX::dup2($v, 1); POSIX::dup2($v, 2);
    POSIX::dup2($tty, 0); POSIX::dup2($tty, 1); POSIX::dup2($tty, 2);
}
"#;

#[test]
fn a_leader_swapping_its_terminal_for_a_read_only_file_never_gets_it_written() {
    let _guard = test_guard!();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let user = TestUser::new();
    let victim = Victim::new();
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"2s\"\nwarn_before = \"1s\"",
        ))
        .start();
    // The daemon on the first core, the swapping leaders on the last: each flip
    // lands while the daemon works, as an attacker with a core of their own has it.
    let leader_cpu = (cpus > 1).then_some(cpus - 1);
    if cpus > 1 {
        process::run_ok(Command::new("taskset").args([
            "-a",
            "-p",
            "-c",
            "0",
            &daemon.pid().to_string(),
        ]));
    }
    let tmux = persistent_tmux(&user);
    const ROUNDS: usize = 8;
    const AT_ONCE: usize = 4;
    let started = Instant::now();
    let mut ended = Vec::new();
    for round in 0..ROUNDS {
        let mut ids = Vec::new();
        for i in 0..AT_ONCE {
            let name = format!("swap{round}-{i}");
            let pane = tmux.new_session(
                &name,
                &perl_leader(leader_cpu, SWAPPER, &[&victim.path.display().to_string()]),
            );
            let pid = pane.pid();
            let session = daemon.wait_for_session("the swapping leader's session", APPEAR, |s| {
                s.leader_pid == pid
            });
            assert_eq!(session.kind, Kind::Local, "{session:?}");
            ids.push((session.id, pid));
        }
        for (id, pid) in ids {
            daemon.wait_session_gone(&id, Duration::from_secs(20));
            harness::wait_until(
                "the swapping leader to be ended",
                Duration::from_secs(10),
                || (!process::alive(pid)).then_some(()),
            );
            ended.push(id);
        }
        victim.assert_untouched();
    }
    let audit = daemon.audit();
    for id in &ended {
        let end = records(&audit, id, "session_end");
        assert_eq!(end.len(), 1, "session {id} ended once: {end:?}");
        assert_eq!(end[0]["reason"], "idle", "{}", end[0]);
    }
    assert_eq!(ended.len(), ROUNDS * AT_ONCE);
    eprintln!(
        "{} sessions of a swapping leader ended in {:.1} s; the victim file is untouched",
        ended.len(),
        started.elapsed().as_secs_f64()
    );
    victim.assert_untouched();
}

/// Hands the terminal to a process outside its session (which keeps it), then holds
/// only the victim file on 0, 1 and 2.
const GIVER: &str = r#"
open(my $victim, "<", $ARGV[0]) or die "open: $!";
syswrite(STDOUT, "hostile leader ready\n");
sleep 1;
my $child = fork();
if ($child == 0) { POSIX::setsid(); sleep 600; exit 0; }
POSIX::dup2(fileno($victim), $_) for 0, 1, 2;
sleep 600;
"#;

#[test]
fn a_leader_that_gave_its_terminal_away_gets_no_line_and_a_refusal_on_record() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let victim = Victim::new();
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"4s\"\nwarn_before = \"2s\"",
        ))
        .start();
    let tmux = persistent_tmux(&user);
    let pane = tmux.new_session(
        "giver",
        &perl_leader(None, GIVER, &[&victim.path.display().to_string()]),
    );
    let leader = pane.pid();
    let session = daemon.wait_for_session("the giving leader's session", APPEAR, |s| {
        s.leader_pid == leader
    });
    daemon.wait_session_gone(&session.id, Duration::from_secs(20));
    harness::wait_until("the leader to be ended", Duration::from_secs(10), || {
        (!process::alive(leader)).then_some(())
    });
    victim.assert_untouched();

    let audit = daemon.audit();
    let end = records(&audit, &session.id, "session_end");
    assert_eq!(end.len(), 1, "{end:?}");
    assert_eq!(end[0]["reason"], "idle", "{}", end[0]);
    // Neither the warning nor the closing line was written, and both refusals are
    // on record.
    let refused = records(&audit, &session.id, "notice_refused");
    let notices: Vec<&str> = refused
        .iter()
        .filter_map(|r| r["notice"].as_str())
        .collect();
    assert_eq!(notices, ["warning", "closing"], "{refused:?}");
    for r in &refused {
        assert_eq!(r["user"], user.name(), "{r}");
        assert!(
            r["why"]
                .as_str()
                .is_some_and(|w| w.contains("no descriptor of its terminal")),
            "{r}"
        );
    }
    assert!(
        daemon.log().contains("did not write to the terminal"),
        "the refusal is logged as a warning too"
    );
}

/// A cgroup delegated to a user, as systemd delegates `user@UID.service`: the
/// directory and the files that move processes are the user's. Removed on drop
/// with whatever the user created inside, after its processes are killed.
struct Delegated {
    dir: PathBuf,
}

impl Delegated {
    fn new(user: &TestUser) -> Self {
        let dir =
            process::cgroup2_root().join(format!("smtest-delegated-{}.slice", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let delegated = Delegated { dir };
        for name in [
            "",
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.subtree_control",
        ] {
            let path = delegated.dir.join(name);
            std::os::unix::fs::chown(&path, Some(user.uid()), Some(user.gid()))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
        delegated
    }

    fn pids(dir: &Path) -> Vec<u32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        let mut dirs = vec![self.dir.clone()];
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            dirs.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir()),
            );
        }
        for _ in 0..50 {
            let pids: Vec<u32> = dirs.iter().flat_map(|d| Self::pids(d)).collect();
            if pids.is_empty() {
                break;
            }
            process::kill_all(&pids);
            thread::sleep(Duration::from_millis(20));
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn a_cgroup_a_user_named_like_a_container_does_not_make_a_container_session() {
    let _guard = test_guard!();
    let user = TestUser::new();
    // Were the session taken for a container, this rule would end it within seconds.
    let policy = "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n\
                  [[rule]]\nname = \"containers\"\nkinds = [\"container\"]\n\
                  idle_timeout = \"2s\"\nwarn_before = \"1s\"\n";
    let daemon = Daemon::builder().policy(policy).start();
    let delegated = Delegated::new(&user);
    let tmux = persistent_tmux(&user);
    // The user's tmux server runs in the delegated cgroup (as it would under their
    // user@UID.service); root moves it there, the rest is the user's own doing.
    let server: u32 = tmux
        .run_ok(["display-message", "-p", "#{pid}"])
        .trim()
        .parse()
        .expect("tmux server pid");
    std::fs::write(delegated.dir.join("cgroup.procs"), server.to_string()).unwrap();

    const ID: &str = "4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a4f1c2b3a";
    let fake = delegated.dir.join(format!("docker-{ID}.scope"));
    // The pane's shell, run as the user, makes the container-shaped cgroup, moves
    // itself into it and only then starts the leader's work.
    let command = format!(
        "mkdir {dir} && echo $$ > {dir}/cgroup.procs && exec sleep 600",
        dir = shell_quote(&fake.display().to_string())
    );
    let pane = tmux.new_session("fake-container", &command);
    let leader = pane.pid();
    harness::wait_until(
        "the leader to move into its container-shaped cgroup",
        Duration::from_secs(10),
        || Delegated::pids(&fake).contains(&leader).then_some(()),
    );
    let owner = std::fs::metadata(&fake).unwrap().uid();
    assert_eq!(owner, user.uid(), "the user made the cgroup");
    // Make the terminal seen: a write to it.
    pane.type_text("x");
    let session = daemon.wait_for_session("the session in the fake container", APPEAR, |s| {
        s.leader_pid == leader
    });
    assert_eq!(session.kind, Kind::Local, "{session:?}");
    assert!(
        session.extra.get("container").is_none_or(Value::is_null),
        "no container is attributed: {session:?}"
    );
    // Well past the container rule's limit: not warned, not ended.
    thread::sleep(Duration::from_secs(5));
    assert!(
        daemon.session_by_id(&session.id).is_some(),
        "the session was ended"
    );
    let audit = daemon.audit();
    let start = records(&audit, &session.id, "session_start");
    assert_eq!(start.len(), 1, "{start:?}");
    assert_eq!(start[0]["kind"], "local", "{}", start[0]);
    assert_ne!(start[0]["rule"], "containers", "{}", start[0]);
    assert!(records(&audit, &session.id, "warning").is_empty());
    assert!(records(&audit, &session.id, "session_end").is_empty());
    assert!(process::alive(leader));
}

#[test]
fn a_users_leader_named_login_is_a_session_like_any_other() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"3s\"\nwarn_before = \"1s\"",
        ))
        .start();
    // A getty or `login` waiting for a password is not a login yet, and the daemon
    // passes over root's leaders of those names. The user names their own leader
    // `login`: a copy of `cat`, which reads the terminal as a shell would.
    let dir = TempDir::new("named-login");
    dir.allow_traverse();
    let program = dir.join("login");
    std::fs::copy("/bin/cat", &program).expect("copy cat");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmux = persistent_tmux(&user);
    let pane = tmux.new_session(
        "named-login",
        &format!("exec {}", shell_quote(&program.display().to_string())),
    );
    let leader = pane.pid();
    harness::wait_until(
        "the leader to run as `login`",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(format!("/proc/{leader}/comm"))
                .is_ok_and(|comm| comm.trim() == "login")
                .then_some(())
        },
    );
    pane.type_text("x");
    let session = daemon.wait_for_session("the session led by `login`", APPEAR, |s| {
        s.leader_pid == leader
    });
    assert_eq!(session.user, user.name(), "{session:?}");
    // Its rule applies: left alone, it is ended, its leader with it.
    daemon.wait_session_gone(&session.id, Duration::from_secs(20));
    let audit = daemon.audit();
    let end = records(&audit, &session.id, "session_end");
    assert_eq!(end.len(), 1, "{end:?}");
    assert_eq!(end[0]["reason"], "idle", "{}", end[0]);
    harness::wait_until("the leader to be ended", Duration::from_secs(10), || {
        (!process::alive(leader)).then_some(())
    });
}

/// Starts `setsid sh -c 'sleep 600 & exec sleep 600'` as root with pid `pid` (a
/// session of its own whose id is `pid`, with a member), setting the kernel's last
/// pid just before; other processes on a busy machine may take the pid first, so
/// this tries a few times. The second value is the member's pid.
fn spawn_with_pid(pid: u32) -> Option<(Child, u32)> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut child = Command::new("setsid")
            .args(["sh", "-c", "sleep 600 & exec sleep 600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("setsid");
        if child.id() == pid {
            let member =
                harness::wait_until("the new session's member", Duration::from_secs(5), || {
                    process::descendants(pid).first().copied()
                });
            return Some((child, member));
        }
        let _ = child.kill();
        let _ = child.wait();
        if process::alive(pid) {
            return None; // somebody else's process has it now
        }
    }
    None
}

#[test]
fn a_process_that_reused_a_leaders_pid_is_never_signalled() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"4s\"\nwarn_before = \"1s\"",
        ))
        .start();
    let tmux = persistent_tmux(&user);
    let (mut exercised, mut decided) = (0, 0);
    for round in 0..4 {
        let pane = tmux.new_session(
            &format!("reused{round}"),
            "exec perl -e 'syswrite STDOUT, \"ready\\n\"; sleep 600'",
        );
        let leader = pane.pid();
        let session = daemon.wait_for_session("the session", APPEAR, |s| s.leader_pid == leader);
        // Just before the end: freeze the daemon, end the leader behind its back
        // and give its pid to a new session of root's. (Briefly: the daemon's
        // periodic sweep, due every 2 s, would notice the exit first.)
        let idle = daemon.wait_for_session("the end to be near", Duration::from_secs(10), |s| {
            s.id == session.id && s.idle_seconds >= 3.5
        });
        let frozen_at = Instant::now();
        let daemon_pid = Pid::from_raw(daemon.pid() as i32);
        nix::sys::signal::kill(daemon_pid, Signal::SIGSTOP).unwrap();
        let thawed = Thaw(daemon_pid);
        process::signal(leader, Signal::SIGKILL);
        // The pid is free once tmux has reaped the leader; on a busy machine that
        // has been seen to take longer than the daemon may stay frozen. Then this
        // round cannot arrange the reuse: say what held the pid and go on.
        let freed = Wait::new("the leader's pid to be free")
            .timeout(Duration::from_secs(10))
            .try_until_ok(|| match process::get(leader) {
                None => Ok(()),
                Some(p) => Err(format!("{p:?} (parent: {:?})", process::get(p.ppid))),
            });
        let reuse = match freed {
            Ok(()) => spawn_with_pid(leader),
            Err(held) => {
                eprintln!("round {round}: pid {leader} was not freed: {held}");
                None
            }
        };
        let Some((mut reused, member)) = reuse else {
            drop(thawed);
            eprintln!("round {round}: pid {leader} was taken by another process; again");
            daemon.wait_session_gone(&session.id, Duration::from_secs(20));
            continue;
        };
        exercised += 1;
        // Past the session's end deadline, the daemon wakes up to both its timer and
        // the leader's exit.
        let past_end = Duration::from_secs_f64((4.2 - idle.idle_seconds).max(0.0));
        thread::sleep(past_end.saturating_sub(frozen_at.elapsed()));
        drop(thawed);
        daemon.wait_session_gone(&session.id, Duration::from_secs(20));
        // Longer than the whole escalation (SIGHUP, 1 s, SIGTERM, 1 s, SIGKILL).
        thread::sleep(Duration::from_secs(3));
        let reason = records(&daemon.audit(), &session.id, "session_end")
            .first()
            .and_then(|r| r["reason"].as_str().map(str::to_string));
        eprintln!("round {round}: the session ended with reason {reason:?}");
        decided += usize::from(reason.as_deref() == Some("idle"));
        let survived = process::alive(reused.id()) && process::alive(member);
        let _ = reused.kill();
        let _ = reused.wait();
        process::kill_all(&[member]);
        assert!(
            survived,
            "round {round}: the daemon signalled processes that reused the ended leader's pid \
             {leader} (a session of root's): {}",
            daemon.log()
        );
    }
    assert!(
        exercised >= 1,
        "pid reuse could not be arranged in 4 rounds"
    );
    // Which the daemon reads first on waking, the end deadline or the exit, is
    // up to its scheduler: say how often the end was decided after the reuse.
    eprintln!("{decided} of {exercised} rounds decided the end after the pid was reused");
}

/// Continues a stopped daemon when dropped (also when the test fails).
struct Thaw(Pid);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, Signal::SIGCONT);
    }
}

/// Typed into an idle login: floods of everything the probes see, none of it the
/// person's input. Two loops fork and exit `true` as fast as they can (fork and exit
/// events), a loop opens a new pty every few milliseconds (`script`: each a terminal
/// the daemon has not seen, to resolve), and a UDP socket receives its own
/// datagrams without pause (the receive probe).
const FLOOD: &str = "for i in 1 2; do (while :; do /bin/true; done) & done; \
    (while :; do script -qfc true /dev/null; done) >/dev/null 2>&1 & \
    perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => \"127.0.0.1\", \
    Proto => \"udp\") or die; $a = $s->sockname; while (1) { send($s, \"x\", 0, $a); \
    recv($s, $b, 16, 0) }' & echo flood-start''ed";

/// How late the end of a flooding login may come: the floods keep both CPUs busy.
const FLOOD_LATE: f64 = 2.0;

#[test]
fn a_login_flooding_the_probes_is_still_ended_on_time_with_all_its_processes() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let daemon = Daemon::builder()
        .policy(&policy_for(
            &user,
            "idle_timeout = \"6s\"\nwarn_before = \"2s\"",
        ))
        .start();
    let tmux = Tmux::new();
    let pane = tmux.new_session("flood", &sshd.ssh_command(&user));
    pane.wait_for_shell(Duration::from_secs(30));
    let session = daemon.wait_for_session("the ssh session", APPEAR, |s| s.user == user.name());
    pane.type_line(FLOOD);
    pane.wait_for_text("flood-started", Duration::from_secs(10));
    let flooding = Wait::new("the flood's processes")
        .timeout(Duration::from_secs(10))
        .until(|| {
            let names: Vec<String> = user
                .processes()
                .into_iter()
                .filter_map(|pid| process::get(pid).map(|p| p.comm))
                .collect();
            (names.iter().any(|c| c == "perl") && names.iter().any(|c| c == "script"))
                .then_some(names.len())
        });

    let end = Wait::new("the flooding login's end")
        .timeout(Duration::from_secs(40))
        .until(|| {
            records(&daemon.audit(), &session.id, "session_end")
                .first()
                .map(|r| (*r).clone())
        });
    assert_eq!(end["reason"], "idle", "{end}");
    let idle = end["idle_seconds"].as_f64().expect("idle_seconds");
    assert!(
        (6.0..=6.0 + FLOOD_LATE).contains(&idle),
        "the flooding login ended at {idle} s idle; the limit is 6 s: {end}"
    );
    let warnings = records(&daemon.audit(), &session.id, "warning").len();
    assert_eq!(warnings, 1, "warned once before the end");
    // Every process of the login is gone, the floods included (the user has no
    // other).
    let left = Wait::new("every process of the flooding user to be gone")
        .timeout(Duration::from_secs(10))
        .try_until_ok(|| match user.processes().as_slice() {
            [] => Ok(()),
            left => Err(format!(
                "{:?}",
                left.iter().map(|&p| process::get(p)).collect::<Vec<_>>()
            )),
        });
    assert!(
        left.is_ok(),
        "processes of the flooding user survived the end: {left:?}"
    );
    eprintln!("{flooding} processes flooding; ended at {idle:.2} s idle");
}
