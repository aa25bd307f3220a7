//! Console sessions: a shell on a virtual console, typed into through the line
//! discipline (TIOCSTI, the path keyboard and serial input take), is a `console`
//! session; its input counts, its output does not, and the policy ends it. A pipe
//! read while another thread swaps the console onto its descriptor is not input.

use std::{
    fs::OpenOptions,
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use harness::{Daemon, Kind, Session, TestUser, process, test_guard};

/// A login-less shell on a free virtual console, killed on drop.
struct ConsoleShell {
    tty: PathBuf,
    child: Child,
    /// The console's owner before the test gave it to its user.
    owner: (u32, u32),
}

impl ConsoleShell {
    /// A shell of `user`'s; None when the kernel has no virtual consoles
    /// (CONFIG_VT) or none is free.
    fn start(user: &TestUser) -> Option<Self> {
        Self::run(user, "exec bash --norc --noprofile -i", true)
    }

    /// `user`'s `command` (sh) as the console's session leader, its standard streams
    /// on the console; with `reads`, once its line editor reads.
    fn run(user: &TestUser, command: &str, reads: bool) -> Option<Self> {
        let tty = (40..63)
            .map(|n| PathBuf::from(format!("/dev/tty{n}")))
            .find(|path| path.exists() && !in_use(path))?;
        // As login(1) does: the console is the user's while they are logged in, and
        // their shell opens it (setsid, no O_NOCTTY: it becomes the controlling
        // terminal). The shell is the user's from its first instruction, so the
        // session is theirs from the start.
        let owner = std::fs::metadata(&tty).expect("stat the console");
        std::os::unix::fs::chown(&tty, Some(user.uid()), Some(user.gid())).expect("chown");
        let child = Command::new("setsid")
            .args([
                "setpriv",
                &format!("--reuid={}", user.uid()),
                &format!("--regid={}", user.gid()),
                "--init-groups",
                "sh",
                "-c",
                &format!("{command} <{0} >{0} 2>&1", tty.display()),
            ])
            .env("PS1", "$ ")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("setsid");
        let shell = ConsoleShell {
            tty,
            child,
            owner: (owner.uid(), owner.gid()),
        };
        // Keystrokes typed before the shell opened the console would go to a tty
        // that is freed again when the typist closes it.
        harness::wait_until(
            "the shell to open the console",
            Duration::from_secs(10),
            || in_use(&shell.tty).then_some(()),
        );
        // Keystrokes typed while bash is still starting up can be lost to it (under
        // emulation a typed command line once never ran): type only once its line
        // editor reads, which it does with canonical mode off.
        if reads {
            harness::wait_until(
                "the shell to read its first line",
                Duration::from_secs(30),
                || shell.reading().then_some(()),
            );
        }
        Some(shell)
    }

    /// The console's name (`tty40`).
    fn name(&self) -> String {
        self.tty.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Whether the shell's line editor is reading: it turns canonical mode off on the
    /// console while it waits for a line.
    fn reading(&self) -> bool {
        let Ok(tty) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&self.tty)
        else {
            return false;
        };
        nix::sys::termios::tcgetattr(&tty).is_ok_and(|t| {
            !t.local_flags
                .contains(nix::sys::termios::LocalFlags::ICANON)
        })
    }

    /// Types `text` as if on the console's keyboard.
    fn type_text(&self, text: &str) {
        let tty = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&self.tty)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.tty.display()));
        for byte in text.bytes() {
            // SAFETY: TIOCSTI with a pointer to one byte, on a descriptor we own.
            let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSTI, &byte as *const u8) };
            assert_eq!(rc, 0, "TIOCSTI: {}", std::io::Error::last_os_error());
        }
    }
}

/// Whether any process has `tty` open.
fn in_use(tty: &std::path::Path) -> bool {
    process::all().iter().any(|p| {
        std::fs::read_dir(format!("/proc/{}/fd", p.pid))
            .map(|fds| {
                fds.filter_map(Result::ok)
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == tty))
            })
            .unwrap_or(false)
    })
}

impl Drop for ConsoleShell {
    fn drop(&mut self) {
        let pids: Vec<u32> = process::descendants(self.child.id());
        process::kill_all(&pids);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::os::unix::fs::chown(&self.tty, Some(self.owner.0), Some(self.owner.1));
    }
}

/// A daemon whose rule ends `user`'s console sessions after 8 s idle, and a shell
/// of theirs on a free console with the console's name (`tty40`).
fn console_session_of(user: &TestUser) -> (Daemon, ConsoleShell, String) {
    let daemon = console_daemon(user);
    let console = ConsoleShell::start(user).expect(NO_CONSOLE);
    let name = console.name();
    (daemon, console, name)
}

const NO_CONSOLE: &str =
    "a free virtual console /dev/tty40..tty62 (a kernel with CONFIG_VT; no process holding it)";

/// A daemon whose rule ends `user`'s console sessions after 8 s idle. The rule
/// names the test's user: a machine's own consoles (the test VM's serial console
/// runs these tests) are not the test's to end.
fn console_daemon(user: &TestUser) -> Daemon {
    Daemon::builder()
        .policy(&format!(
            "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n\
             [[rule]]\nname = \"consoles\"\nkinds = [\"console\"]\nusers = [\"{}\"]\n\
             idle_timeout = \"8s\"\nwarn_before = \"2s\"\n",
            user.name()
        ))
        .start()
}

/// Waits for session `id` to end, and asserts that it ended as idle.
fn assert_ended_idle(daemon: &Daemon, id: &str, within: Duration) {
    daemon.wait_session_gone(id, within);
    let end = daemon
        .audit()
        .into_iter()
        .find(|r| r["event"] == "session_end" && r["session_id"] == id)
        .expect("an end record");
    assert_eq!(end["reason"], "idle", "{end}");
}

/// `text` as file `name` that the test's user can read and run, in a directory
/// removed when the returned guard drops.
fn readable_script(label: &str, name: &str, text: &str) -> (harness::TempDir, PathBuf) {
    let dir = harness::TempDir::new(label);
    dir.allow_traverse();
    let script = dir.write(name, text);
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, script)
}

/// The perl process the session's shell started (`what`), once it runs.
fn wait_for_perl(session: &Session, what: &str) -> u32 {
    harness::wait_until(what, Duration::from_secs(10), || {
        process::descendants(session.leader_pid)
            .into_iter()
            .find(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "perl")
            })
    })
}

/// A kernel counter from `status`.
fn counter(daemon: &Daemon, name: &str) -> u64 {
    daemon.status()["counters"][name].as_u64().unwrap_or(0)
}

/// The tracepoint backend's console read program (`sys_exit_read`: every read on
/// the host passes it), as `status` shows it: whether it is attached now; None on
/// the fentry backend, whose console programs are attached from start to stop.
fn console_reads_attached(daemon: &Daemon) -> Option<bool> {
    let status = daemon.status();
    let standby = status["standby_programs"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no standby programs: {status:#}"));
    let Some(reads) = standby
        .iter()
        .find(|p| p["attach"] == "tracepoint/syscalls/sys_exit_read")
    else {
        assert_eq!(status["backend"], "fentry", "{status:#}");
        return None;
    };
    let attached = reads["attached"].as_bool().expect("attached: bool");
    let listed = status["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .any(|p| p["attach"] == "tracepoint/syscalls/sys_exit_read");
    assert_eq!(
        attached, listed,
        "attached programs and standby disagree: {status:#}"
    );
    // Pinned like the other programs' links while attached (it outlives a daemon
    // that dies), and unpinned when detached.
    let state = &status["kernel_state"];
    if state["links_pinned"] == true {
        let dir = state["dir"].as_str().expect("kernel_state.dir");
        let name = reads["name"].as_str().expect("name");
        let pin = Path::new(dir).join("links").join(name);
        assert_eq!(pin.exists(), attached, "{}: {status:#}", pin.display());
    }
    Some(attached)
}

/// The console session `name` of `daemon`, once the daemon found it.
fn wait_console_session(daemon: &Daemon, name: &str) -> Session {
    daemon.wait_for_session("the console session", Duration::from_secs(20), |s| {
        s.tty == name && s.kind == Kind::Console
    })
}

#[test]
fn a_shell_on_a_console_is_a_console_session_and_its_idle_end_works() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let (daemon, console, name) = console_session_of(&user);
    // Found from the shell's prompt, before anything is typed.
    let session = wait_console_session(&daemon, &name);
    assert_eq!(session.user, user.name(), "{session:?}");
    assert!(
        session.server_pid.is_none(),
        "a console has no transport: {session:?}"
    );
    let backend = daemon.status()["backend"].clone();
    if backend == "tracepoint" {
        assert_eq!(
            console_reads_attached(&daemon),
            Some(true),
            "a console login is tracked: its reads must be watched"
        );
    }

    // Output on the console does not count; keystrokes do.
    let before = daemon.session_by_id(&session.id).expect("listed");
    console.type_text("for i in $(seq 30); do echo out; sleep 0.1; done\n");
    let typed = harness::wait_until("the keystrokes to count", Duration::from_secs(5), || {
        daemon
            .session_by_id(&session.id)
            .filter(|s| s.input_count > before.input_count)
    });
    thread::sleep(Duration::from_secs(4));
    let after = daemon.session_by_id(&session.id).expect("still listed");
    assert!(
        after.idle_seconds >= 3.0 && after.input_count == typed.input_count,
        "printing must not count as input: {typed:?} then {after:?}"
    );

    // Left alone, it is warned on the console and ended.
    assert_ended_idle(&daemon, &session.id, Duration::from_secs(20));
    assert!(
        !process::alive(session.leader_pid),
        "the console shell must be ended"
    );

    // With no console login left, reads on the host pay nothing for consoles (the
    // machine's own console may still have one: the test VM's runs these tests).
    if backend == "tracepoint" {
        let others = daemon.sessions().iter().any(|s| s.kind == Kind::Console);
        harness::wait_until(
            format!("the console read program attached: {others}"),
            Duration::from_secs(10),
            || (console_reads_attached(&daemon) == Some(others)).then_some(()),
        );
    }
}

/// A console login whose processes neither write to the console nor read from it
/// (no prompt, no motd, nothing typed) is found all the same, from /proc, and ended
/// when idle. Its writes or its input would announce it, but a login can avoid both,
/// and on the tracepoint backend the console read probe waits on standby until a
/// console login is known.
#[test]
fn a_silent_console_login_is_found_and_ended_idle() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let daemon = console_daemon(&user);
    let console = ConsoleShell::run(&user, "exec sleep 600", false).expect(NO_CONSOLE);
    let session = wait_console_session(&daemon, &console.name());
    assert_eq!(session.user, user.name(), "{session:?}");
    assert_ended_idle(&daemon, &session.id, Duration::from_secs(30));
    assert!(
        !process::alive(session.leader_pid),
        "the silent login must be ended"
    );
}

/// Reads of a pipe by one thread while another puts the console on the read's
/// descriptor and takes it away again, in a loop: a read of the pipe that returns
/// just after the swap finds the console behind its descriptor at its exit. Run on
/// the console (it is the script's controlling terminal) for `seconds`.
const SWAP_SCRIPT: &str = r#"
use strict; use warnings; use threads; use POSIX (); use Fcntl qw(O_RDWR O_NONBLOCK O_NOCTTY F_GETFL F_SETFL);
my ($console, $seconds) = @ARGV;
my $end = time + $seconds;
pipe(my $r, my $w) or die "pipe: $!";
for my $fh ($r, $w) { fcntl($fh, F_SETFL, fcntl($fh, F_GETFL, 0) | O_NONBLOCK) or die "fcntl: $!" }
my $tty = POSIX::open($console, O_RDWR | O_NONBLOCK | O_NOCTTY) // die "open $console: $!";
my $pipe = fileno($r);
my $fd = POSIX::dup($pipe) // die "dup: $!";
my @threads = (
    threads->create(sub { my $buf = 'x' x 4096; while (time < $end) { syswrite($w, $buf) } }),
    threads->create(sub { while (time < $end) { POSIX::dup2($tty, $fd); POSIX::dup2($pipe, $fd) } }),
);
my ($buf, $reads) = ('', 0);
while (time < $end) { $reads++ if (POSIX::read($fd, $buf, 64) // 0) > 0 }
$_->join for @threads;
print "pipe reads: $reads\n";
"#;

#[test]
fn reads_of_a_pipe_swapped_with_the_console_on_one_descriptor_are_not_input() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let (daemon, console, name) = console_session_of(&user);
    let (_dir, script) = readable_script("swap", "swap.pl", SWAP_SCRIPT);
    // The user's one command line is their last input.
    console.type_text(&format!(
        "perl {} {} 60\n",
        script.display(),
        console.tty.display()
    ));
    let session = wait_console_session(&daemon, &name);
    let swapping = wait_for_perl(&session, "the script to run");
    // Its pipe reads do not count as the console's input: it is ended as idle,
    // long before the script would stop.
    assert_ended_idle(&daemon, &session.id, Duration::from_secs(30));
    assert!(
        !process::alive(swapping),
        "the swapping script must be ended with its session"
    );
}

/// Asks the console questions and reads its answers, in a loop, for `$1` seconds:
/// one byte per read (the answers span reads), then a flood of questions whose
/// answers (100 kB) fill the line discipline's buffer many times over, read in large
/// pieces. Run on the console with its controlling terminal;
/// what the reads found goes to the log file `$2`.
const QUERY_SCRIPT: &str = r#"
end=$((SECONDS + $1))
stty -icanon -echo min 0 time 5
while [ $SECONDS -lt $end ]; do
    printf '\033[c\033[5n\033[6n'
    n=0
    while IFS= read -rs -t 1 -N 1 c; do n=$((n + 1)); done
    echo "bytes one at a time: $n" >> "$2"
    printf '\033[c%.0s' $(seq 20000)
    echo "bytes in large reads: $(cat | wc -c)" >> "$2"
    sleep 0.5
done
"#;

#[test]
fn a_loop_of_questions_to_the_console_is_not_input() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let (daemon, console, name) = console_session_of(&user);
    let (_dir, script) = readable_script("queries", "queries.sh", QUERY_SCRIPT);
    let answers_before = counter(&daemon, "answers_ignored");
    // The user's one command line is their last input.
    let log = user.home().join("queries.log");
    console.type_text(&format!("bash {} 60 {}\n", script.display(), log.display()));
    let session = wait_console_session(&daemon, &name);
    // The console answers (the reads find bytes), and none of it counts: the session
    // is ended as idle, long before the loop would stop.
    assert_ended_idle(&daemon, &session.id, Duration::from_secs(40));
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("{log}");
    let answered = |kind: &str| {
        log.lines()
            .filter_map(|l| l.strip_prefix(kind))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum::<u64>()
    };
    assert!(
        answered("bytes one at a time:") >= 20 && answered("bytes in large reads:") >= 4096,
        "the console should have answered the questions:\n{log}"
    );
    let ignored = counter(&daemon, "answers_ignored") - answers_before;
    assert!(
        ignored >= 20,
        "status should count the answers left out: {ignored}"
    );
}

/// Sets `dev.tty.legacy_tiocsti` to 1 (where the kernel has it: 6.2+; before, TIOCSTI
/// is always allowed) and restores it on drop.
struct LegacyTiocsti(Option<String>);

const LEGACY_TIOCSTI: &str = "/proc/sys/dev/tty/legacy_tiocsti";

impl LegacyTiocsti {
    fn allow() -> Self {
        let old = std::fs::read_to_string(LEGACY_TIOCSTI).ok();
        if old.is_some() {
            std::fs::write(LEGACY_TIOCSTI, "1").expect("allow TIOCSTI");
        }
        LegacyTiocsti(old)
    }
}

impl Drop for LegacyTiocsti {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(LEGACY_TIOCSTI, old.trim());
        }
    }
}

#[test]
fn a_console_session_typing_into_itself_is_not_input() {
    let _guard = test_guard!();
    let _allowed = LegacyTiocsti::allow();
    let user = TestUser::new();
    let (daemon, console, name) = console_session_of(&user);
    let injected_before = counter(&daemon, "injections_ignored");
    // A process of the session pushes Enter into its own console's input every half
    // second (TIOCSTI on its controlling terminal), and the shell reads it.
    console.type_text(
        "perl -e 'while (1) { my $c = \"\\n\"; ioctl(STDIN, 0x5412, $c) or die \"TIOCSTI: $!\"; \
         select(undef, undef, undef, 0.5) }' &\n",
    );
    let session = wait_console_session(&daemon, &name);
    let injecting = wait_for_perl(&session, "the injecting loop to run");
    assert_ended_idle(&daemon, &session.id, Duration::from_secs(30));
    let ignored = counter(&daemon, "injections_ignored") - injected_before;
    assert!(
        ignored >= 5,
        "the injected keystrokes should have been seen and left out: {ignored}"
    );
    assert!(
        !process::alive(injecting),
        "the injecting loop must be ended with its session"
    );
}
