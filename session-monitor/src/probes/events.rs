//! Reads the ring buffer asynchronously and hands decoded events to the daemon.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use session_monitor_common::{Event, EventKind, LoginId};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
    task::JoinHandle,
};

/// Spawns the reader. `received` counts events read, for `status` and readiness.
pub fn spawn_event_reader(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Event>,
    received: Arc<AtomicU64>,
) -> Result<JoinHandle<()>> {
    // SAFETY: the ring buffer owns its map fd for as long as it lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| anyhow::anyhow!("watching the ring buffer: {err}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(err) => {
                    tracing::error!("ring buffer unreadable: {err}");
                    return;
                }
            };
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(item) = ring.next() {
                if let Some(event) = decode(&item) {
                    batch.push(event);
                }
            }
            guard.clear_ready();
            received.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for event in batch {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    }))
}

/// One ring-buffer record as an [`Event`]; `None` (and a warning) for a short one.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < Event::SIZE {
        tracing::warn!(len = bytes.len(), "short event in ring buffer");
        return None;
    }
    // SAFETY: Event is plain old data and the buffer is at least its size.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// What the events about logins say, decoded from the raw [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginEvent {
    /// `login`'s transport (`transport`) wrote into a pipe or AF_UNIX socket: input
    /// without a terminal. Sent on the login's first input, then at most once per
    /// notice interval; map `LOGIN_ACTIVITY` has the latest (`login_activity`).
    Input {
        login: LoginId,
        transport: u32,
        /// Input bytes of the login so far.
        total_bytes: u64,
        /// CLOCK_BOOTTIME ns.
        ts_ns: u64,
    },
    /// A process flagged `LISTENER` (`parent`) forked `child`: maybe a new login
    /// without a terminal. `parent_login` is the listener's own login (usually none);
    /// if it has one, `child` is already its member.
    ListenerForked {
        parent: u32,
        child: u32,
        parent_login: LoginId,
    },
}

/// Decodes the login events; `None` for every other kind.
pub fn login_event(event: &Event) -> Option<LoginEvent> {
    match event.kind()? {
        EventKind::LoginInput => Some(LoginEvent::Input {
            login: event.login,
            transport: event.tgid,
            total_bytes: event.value,
            ts_ns: event.ts_ns,
        }),
        EventKind::ListenerForked => Some(LoginEvent::ListenerForked {
            parent: event.tgid,
            child: event.value as u32,
            parent_login: event.login,
        }),
        _ => None,
    }
}

// Each parser's tests include the shared fuzzing support themselves, so that the
// daemon's module tree (main.rs) stays as it is.
#[cfg(test)]
#[path = "../fuzz/support.rs"]
#[allow(clippy::duplicate_mod)]
mod fuzz_support;

#[cfg(test)]
mod tests {
    //! The ring buffer's records come from the daemon's own eBPF programs, but the
    //! decoder must hold for any bytes: a short, long or garbled record is dropped
    //! or read field by field, never a panic.

    use proptest::prelude::*;
    use session_monitor_common::{EventKind, TtyKey};

    use super::{Event, decode, fuzz_support};

    /// The record as the eBPF side writes it (`#[repr(C)]`, little-endian on
    /// every target the probes build for).
    fn bytes_of(e: &Event) -> Vec<u8> {
        let mut b = Vec::with_capacity(Event::SIZE);
        for v in [e.kind, e.tgid, e.uid, e._pad, e.key.rdev, e.key.pts_dev] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&e.ts_ns.to_le_bytes());
        b.extend_from_slice(&e.value.to_le_bytes());
        b.extend_from_slice(&e.login.to_le_bytes());
        b.extend_from_slice(&e.comm);
        b
    }

    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        match decode(bytes) {
            None => prop_assert!(bytes.len() < Event::SIZE),
            Some(event) => {
                prop_assert!(bytes.len() >= Event::SIZE);
                // What the daemon reads of it is what the bytes say.
                prop_assert_eq!(&bytes_of(&event)[..], &bytes[..Event::SIZE]);
                let kind = event.kind();
                prop_assert_eq!(kind.is_some(), (1..=7).contains(&event.kind));
                if let Some(kind) = kind {
                    prop_assert_eq!(kind as u32, event.kind);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn fuzz_events_corpus_replays() {
        assert_eq!(
            Event::SIZE,
            64,
            "the record layout changed: update the corpus"
        );
        for (name, bytes) in fuzz_support::corpus("events") {
            check(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            any::<[u32; 4]>(),
            any::<[u32; 2]>(),
            any::<[u64; 3]>(),
            any::<[u8; 16]>(),
        )
            .prop_map(
                |([kind, tgid, uid, _pad], [rdev, pts_dev], [ts_ns, value, login], comm)| Event {
                    kind,
                    tgid,
                    uid,
                    _pad,
                    key: TtyKey { rdev, pts_dev },
                    ts_ns,
                    value,
                    login,
                    comm,
                },
            )
    }

    proptest! {
        #![proptest_config(fuzz_support::config(1024))]

        #[test]
        fn fuzz_events_mutated_corpus(bytes in fuzz_support::mutated("events")) {
            check(&bytes)?;
        }

        #[test]
        fn fuzz_events_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            check(&bytes)?;
        }

        #[test]
        fn fuzz_events_round_trip(event in event()) {
            let decoded = decode(&bytes_of(&event)).expect("a whole record");
            prop_assert_eq!(bytes_of(&decoded), bytes_of(&event));
            prop_assert_eq!(decoded.kind(), EventKind::from_u32(event.kind));
        }
    }
}

#[cfg(test)]
mod login_tests {
    use super::*;
    use session_monitor_common::TtyKey;

    fn event(kind: EventKind, tgid: u32, value: u64, login: LoginId) -> Event {
        Event {
            kind: kind as u32,
            tgid,
            uid: 1000,
            _pad: 0,
            key: TtyKey::default(),
            ts_ns: 42,
            value,
            login,
            comm: [0; 16],
        }
    }

    #[test]
    fn decodes_login_events() {
        assert_eq!(
            login_event(&event(EventKind::LoginInput, 700, 12, 0xabc)),
            Some(LoginEvent::Input {
                login: 0xabc,
                transport: 700,
                total_bytes: 12,
                ts_ns: 42
            })
        );
        assert_eq!(
            login_event(&event(EventKind::ListenerForked, 1, 4242, 0)),
            Some(LoginEvent::ListenerForked {
                parent: 1,
                child: 4242,
                parent_login: 0
            })
        );
        assert_eq!(login_event(&event(EventKind::TtyInput, 1, 1, 0)), None);
    }

    #[test]
    fn decodes_what_the_kernel_wrote() {
        let raw = event(EventKind::LoginInput, 9, 3, 7);
        // SAFETY: Event is plain old data.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw as *const Event).cast::<u8>(), Event::SIZE) };
        let decoded = decode(bytes).unwrap();
        assert_eq!(decoded.login, 7);
        assert!(decode(&bytes[..Event::SIZE - 1]).is_none());
    }
}
