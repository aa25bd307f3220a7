//! Mosh sessions: mosh-client in tmux, mosh-server started over a real sshd as a fresh
//! user. Besides typing, the daemon tracks whether the client is still there (network
//! idle time, from the UDP datagrams mosh-server receives).

use std::{
    thread,
    time::{Duration, Instant},
};

use harness::{Daemon, Kind, Mosh, Sshd, TestUser, test_guard};

const APPEAR: Duration = Duration::from_secs(30);

#[test]
fn mosh_session_typing_and_network_liveness() {
    let _guard = test_guard!();
    let user = TestUser::new();
    let sshd = Sshd::start();
    sshd.authorize(&user);
    let daemon = Daemon::start();
    let mosh = Mosh::connect(&sshd, &user);
    let pane = mosh.pane();
    pane.wait_for_shell(Duration::from_secs(30));

    // Listed as mosh, served by the user's mosh-server.
    let session = daemon.wait_for_session("the mosh session", APPEAR, |s| {
        s.user == user.name() && s.kind == Kind::Mosh
    });
    let id = session.id.clone();
    assert_eq!(session.uid, user.uid(), "{session:?}");
    assert_eq!(session.server_pid, mosh.server_pid(), "{session:?}");
    assert_eq!(
        session.server.as_deref(),
        Some("mosh-server"),
        "{session:?}"
    );
    assert!(
        session.network_idle_seconds.is_some(),
        "mosh sessions have a network idle time: {session:?}"
    );

    // Typing resets the idle time.
    daemon.assert_typing_resets_idle(&id, &pane, 3.0, APPEAR);

    // Without typing, idle time grows while the client keeps the network fresh (it
    // sends a heartbeat at least every 3 s).
    let started = Instant::now();
    let mut highest: f64 = 0.0;
    loop {
        let s = daemon.session_by_id(&id).expect("session listed");
        let network = s.network_idle_seconds.expect("network idle time");
        highest = highest.max(network);
        assert!(
            network < 4.5,
            "the connected client should keep network idle time low: {s:?}"
        );
        if s.idle_seconds >= 6.0 {
            eprintln!(
                "idle {} s, network idle at most {highest} s",
                s.idle_seconds
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "idle time should reach 6 s without typing: {s:?}"
        );
        thread::sleep(Duration::from_millis(500));
    }

    // A client that vanished (SIGKILL, so it says nothing) lets network idle grow.
    mosh.kill_client();
    let killed = Instant::now();
    thread::sleep(Duration::from_secs(7));
    let s = daemon
        .session_by_id(&id)
        .expect("the session stays while mosh-server waits for its client");
    let network = s.network_idle_seconds.expect("network idle time");
    eprintln!("network idle {network} s after the client died");
    assert!(
        network >= 6.0,
        "network idle time should grow after the client died {:.1} s ago: {s:?}",
        killed.elapsed().as_secs_f64()
    );
}
