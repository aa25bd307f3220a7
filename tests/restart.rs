//! Restarts lose nothing: the kernel side is pinned under bpffs, so a daemon killed
//! with SIGKILL and started again (same `--pin-dir`, `--state-dir` and audit log)
//! knows every session's exact last input — including input typed while no daemon
//! ran — and the warnings already given. The end comes when it would have come
//! without the crash.
//!
//! Why the tests line up with 8-second blocks: the terminal's access time, which a
//! daemon without pinned state would fall back to, moves only when the wall clock
//! enters a new 8-second block (the kernel's `tty_update_time`). Typing twice in one
//! block leaves the access time at the first keystroke, so a daemon that trusted it
//! would end the session seconds early; these tests fail that way against a daemon
//! that does not pin.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use harness::{Daemon, Kind, Pane, PinDir, Session, Sshd, TempDir, TestUser, Tmux, test_guard};
use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

const APPEAR: Duration = Duration::from_secs(20);
/// The goal: the end within 0.3 s of when it would have come without the crash.
const EXACT: f64 = 0.3;
/// How late an end may come on this loaded two-core machine.
const LATE: f64 = 1.0;

/// Files a daemon and its restarted successor share.
struct Shared {
    pins: PinDir,
    state: TempDir,
    audit: std::path::PathBuf,
    policy: String,
}

impl Shared {
    fn new(user: &TestUser, limits: &str) -> Self {
        let state = TempDir::new("restart-state");
        let audit = state.join("audit.jsonl");
        Self {
            pins: PinDir::new("restart"),
            policy: format!(
                "idle_timeout = \"none\"\nnetwork_timeout = \"none\"\nkill_grace = \"1s\"\n\n\
                 [[rule]]\nname = \"test user\"\nusers = [\"{}\"]\n{limits}\n",
                user.name()
            ),
            state,
            audit,
        }
    }

    fn start(&self) -> Daemon {
        Daemon::builder()
            .policy(&self.policy)
            .pin_dir(self.pins.path())
            .state_dir(self.state.join("state"))
            .arg("--audit-log")
            .arg(&self.audit)
            .start()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The idle limit of a test that waits for [`align_to_block`] after its login: that
/// wait alone can take 8.2 s, so the limit must leave room for it and for the
/// warning before the first keystroke (an 8 s limit once ended the login first).
const IDLE_AFTER_ALIGN: u32 = 12;

/// Sleeps until `offset` seconds into the next 8-second block of the wall clock, so
/// that the following keystrokes fall into one block of the terminal's access time.
fn align_to_block(offset: f64) {
    let now = unix_now();
    let start = (now / 8.0).floor() * 8.0 + 8.0;
    thread::sleep(Duration::from_secs_f64(start + offset - now));
}

fn record_time(record: &Value) -> f64 {
    let text = record["time"].as_str().expect("record time");
    let t = OffsetDateTime::parse(text, &Rfc3339).expect("RFC 3339 time");
    t.unix_timestamp_nanos() as f64 / 1e9
}

fn records<'a>(audit: &'a [Value], session: &Session, event: &str) -> Vec<&'a Value> {
    audit
        .iter()
        .filter(|r| r["event"] == event && r["session_id"] == session.id.as_str())
        .collect()
}

/// An ssh login in tmux and its session, seen by `daemon`.
fn login<'a>(tmux: &'a Tmux, sshd: &Sshd, user: &TestUser, daemon: &Daemon) -> (Pane<'a>, Session) {
    let pane = tmux.new_session("restart", &sshd.ssh_command(user));
    pane.wait_for_shell(Duration::from_secs(30));
    let session = daemon.wait_for_session("the ssh session", APPEAR, |s| {
        s.user == user.name() && s.kind == Kind::Ssh
    });
    (pane, session)
}

/// Waits for the session's end record and returns it.
fn wait_end(shared: &Shared, session: &Session, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(end) = records(&shared.audit(), session, "session_end").first() {
            return (*end).clone();
        }
        assert!(
            Instant::now() < deadline,
            "no session_end for {} within {timeout:?}; audit: {:#?}",
            session.id,
            shared.audit()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn assert_pinned_state_reused(daemon: &Daemon) {
    let status = daemon.status();
    let state = &status["kernel_state"];
    assert_eq!(state["found"], "reused", "status: {status:#}");
    assert_eq!(state["links_pinned"], true, "status: {status:#}");
}

#[test]
fn a_crash_keeps_idle_times_exact_and_input_typed_meanwhile_counts() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let shared = Shared::new(
        &user,
        &format!("idle_timeout = \"{IDLE_AFTER_ALIGN}s\"\nwarn_before = \"2s\""),
    );
    let mut first = shared.start();
    let tmux = Tmux::new();
    let (pane, session) = login(&tmux, &sshd, &user, &first);

    // One keystroke early in a block (the terminal's access time becomes that
    // moment), the daemon dies, one more keystroke in the same block while no
    // daemon runs, then a new daemon starts.
    align_to_block(0.2);
    pane.type_text("x");
    thread::sleep(Duration::from_millis(800));
    first.crash();
    thread::sleep(Duration::from_millis(1000));
    pane.type_text("y");
    let typed_meanwhile = unix_now();
    let second = shared.start();
    assert_pinned_state_reused(&second);
    let found = second.wait_for_session("the same session after the restart", APPEAR, |s| {
        s.id == session.id
    });
    let seen_idle = unix_now() - typed_meanwhile;
    assert!(
        found.idle_seconds <= seen_idle + EXACT,
        "the restarted daemon did not see the keystroke typed while it was down: idle \
         {:.2} s, but the last keystroke was {seen_idle:.2} s ago",
        found.idle_seconds
    );

    let end = wait_end(&shared, &session, Duration::from_secs(30));
    assert_eq!(end["reason"], "idle", "{end}");
    let idle_at_end = record_time(&end) - typed_meanwhile;
    eprintln!("ended {idle_at_end:.3} s after the last keystroke (limit {IDLE_AFTER_ALIGN} s)");
    let limit = IDLE_AFTER_ALIGN as f64;
    assert!(
        (limit - EXACT..=limit + LATE).contains(&idle_at_end),
        "ended {idle_at_end:.2} s after the last keystroke; the limit is {limit} s"
    );
    drop(second);
}

#[test]
fn a_warning_given_before_a_crash_is_not_given_again() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let shared = Shared::new(&user, "idle_timeout = \"8s\"\nwarn_before = \"3s\"");
    let mut first = shared.start();
    let tmux = Tmux::new();
    let (pane, session) = login(&tmux, &sshd, &user, &first);

    pane.type_text("x");
    let typed = unix_now();
    pane.wait_for_text(
        "will be closed for inactivity in 3 seconds",
        Duration::from_secs(15),
    );
    first.crash();
    let second = shared.start();
    assert_pinned_state_reused(&second);

    let end = wait_end(&shared, &session, Duration::from_secs(30));
    assert_eq!(end["reason"], "idle", "{end}");
    let audit = shared.audit();
    let warnings = records(&audit, &session, "warning");
    assert_eq!(
        warnings.len(),
        1,
        "warned once, by the first daemon: {warnings:#?}"
    );
    // A second warning would have postponed the end by its full 3 s.
    let idle_at_end = record_time(&end) - typed;
    assert!(
        (8.0 - EXACT..=8.0 + LATE).contains(&idle_at_end),
        "ended {idle_at_end:.2} s after the last keystroke; the limit is 8 s and the \
         warning announced the end"
    );
}

#[test]
fn a_clean_stop_detaches_the_programs_and_keeps_the_maps() {
    let _guard = test_guard!();
    let pins = PinDir::new("clean-stop");
    let mut daemon = Daemon::builder().pin_dir(pins.path()).start();
    let status = daemon.status();
    let dir = status["kernel_state"]["dir"]
        .as_str()
        .unwrap_or_else(|| panic!("no kernel_state.dir: {status:#}"))
        .to_string();
    assert_eq!(status["kernel_state"]["found"], "fresh", "{status:#}");
    let links = Path::new(&dir).join("links");
    let maps = Path::new(&dir).join("maps");
    let count = |d: &Path| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0);
    assert!(count(&links) > 0, "no link pinned in {}", links.display());
    assert!(count(&maps) > 0, "no map pinned in {}", maps.display());
    let programs = status["programs"].as_array().map_or(0, Vec::len);
    assert_eq!(
        count(&links),
        programs,
        "one pinned link per attached program"
    );

    daemon.stop();
    assert_eq!(count(&links), 0, "a clean stop leaves no program attached");
    assert!(count(&maps) > 0, "a clean stop keeps the maps");
    let again = Daemon::builder().pin_dir(pins.path()).start();
    assert_eq!(again.status()["kernel_state"]["found"], "reused");
}

#[test]
fn state_of_another_layout_is_replaced_and_said_so() {
    let _guard = test_guard!();
    let pins = PinDir::new("layout");
    // What an older daemon with other maps would have left.
    let old = pins.path().join("v0-0000000000000000").join("maps");
    std::fs::create_dir_all(&old).expect("mkdir on bpffs");
    let daemon = Daemon::builder().pin_dir(pins.path()).start();
    let status = daemon.status();
    assert_eq!(status["kernel_state"]["found"], "replaced", "{status:#}");
    assert!(!old.exists(), "the other layout's state is removed");
    assert!(
        daemon.log().contains("kernel state of another layout"),
        "the log says so:\n{}",
        daemon.log()
    );
}
