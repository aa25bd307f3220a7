//! Reads the ring buffer asynchronously and hands decoded events to the daemon.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use session_monitor_common::{Event, EventKind, LoginId, NO_LOGIN, TtyKey};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
    task::JoinHandle,
};

/// What the kernel told the daemon, decoded once from the raw ring-buffer record
/// ([`Event`]): each kind with the fields the daemon acts on, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    /// Terminal `key` was written to for the first time (since it was last forgotten)
    /// by its transport, `writer`.
    TtyFirstInput { key: TtyKey, writer: u32 },
    /// Terminal `key` was seen for the first time through program output by `writer`,
    /// a process inside the session.
    TtyFirstOutput { key: TtyKey, writer: u32 },
    /// Input on known terminal `key` from `writer`, at most once per notice interval;
    /// map `TTY_ACTIVITY` has the totals.
    TtyInput { key: TtyKey, writer: u32 },
    /// Tracked process `tgid` exited.
    ProcessExit { tgid: u32 },
    /// `writer` (`comm`, running as revoked `uid`) got SIGKILL for writing input.
    InputBlocked {
        writer: u32,
        uid: u32,
        comm: String,
        into: Blocked,
    },
    /// `login`'s transport wrote into a pipe or AF_UNIX socket: input without a
    /// terminal, at most once per notice interval; map `LOGIN_ACTIVITY` has the totals.
    LoginInput { login: LoginId },
    /// A process flagged `LISTENER` forked `child`: maybe a new login without a
    /// terminal.
    ListenerForked { child: u32 },
}

/// Where blocked input was going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Into this terminal.
    Terminal(TtyKey),
    /// Into a pipe or socket of this login, by its transport.
    Login(LoginId),
}

impl Blocked {
    /// The terminal written to; zero for a login's pipe or socket.
    pub fn tty(&self) -> TtyKey {
        match self {
            Blocked::Terminal(key) => *key,
            Blocked::Login(_) => TtyKey::default(),
        }
    }
}

/// Why a record was not an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than [`Event::SIZE`].
    Short(usize),
    /// A kind this daemon does not know.
    UnknownKind(u32),
}

impl KernelEvent {
    /// Decodes one ring-buffer record. Bytes past [`Event::SIZE`] are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let raw = raw_event(bytes).ok_or(DecodeError::Short(bytes.len()))?;
        let kind = raw.kind().ok_or(DecodeError::UnknownKind(raw.kind))?;
        let (key, writer) = (raw.key, raw.tgid);
        Ok(match kind {
            EventKind::TtyFirstInput => Self::TtyFirstInput { key, writer },
            EventKind::TtyFirstOutput => Self::TtyFirstOutput { key, writer },
            EventKind::TtyInput => Self::TtyInput { key, writer },
            EventKind::ProcessExit => Self::ProcessExit { tgid: raw.tgid },
            EventKind::RevokedInputBlocked => Self::InputBlocked {
                writer,
                uid: raw.uid,
                comm: comm(&raw.comm),
                into: if raw.login == NO_LOGIN {
                    Blocked::Terminal(key)
                } else {
                    Blocked::Login(raw.login)
                },
            },
            EventKind::LoginInput => Self::LoginInput { login: raw.login },
            EventKind::ListenerForked => Self::ListenerForked {
                child: raw.child_tgid,
            },
        })
    }
}

/// The record's bytes as the `#[repr(C)]` struct the programs wrote (the
/// probe-level tests read them so).
pub fn raw_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < Event::SIZE {
        return None;
    }
    // SAFETY: Event is plain old data and the buffer is at least its size.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// A task's `comm`: up to the first NUL, not necessarily UTF-8.
fn comm(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Spawns the reader. `received` counts records read, for `status` and readiness.
pub fn spawn_event_reader(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<KernelEvent>,
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
            let mut read = 0;
            while let Some(item) = ring.next() {
                match KernelEvent::decode(&item) {
                    Ok(event) => batch.push(event),
                    Err(DecodeError::Short(len)) => {
                        tracing::warn!(len, "short event in ring buffer");
                        continue;
                    }
                    Err(DecodeError::UnknownKind(kind)) => {
                        tracing::warn!(kind, "unknown event kind")
                    }
                }
                read += 1;
            }
            guard.clear_ready();
            received.fetch_add(read, Ordering::Relaxed);
            for event in batch {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    }))
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

    use super::*;

    /// The record as the eBPF side writes it (`#[repr(C)]`, little-endian on
    /// every target the probes build for).
    fn bytes_of(e: &Event) -> Vec<u8> {
        let mut b = Vec::with_capacity(Event::SIZE);
        for v in [
            e.kind,
            e.tgid,
            e.uid,
            e.child_tgid,
            e.key.rdev,
            e.key.pts_dev,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&e.login.to_le_bytes());
        b.extend_from_slice(&e.comm);
        b
    }

    /// What a record says, read from its bytes at the documented places.
    fn expected(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
        if bytes.len() < Event::SIZE {
            return Err(DecodeError::Short(bytes.len()));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let (kind, tgid, uid, child) = (u32_at(0), u32_at(4), u32_at(8), u32_at(12));
        let key = TtyKey {
            rdev: u32_at(16),
            pts_dev: u32_at(20),
        };
        let login = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
        let comm = comm(&bytes[32..48]);
        Ok(match kind {
            1 => KernelEvent::TtyFirstInput { key, writer: tgid },
            2 => KernelEvent::TtyFirstOutput { key, writer: tgid },
            3 => KernelEvent::TtyInput { key, writer: tgid },
            4 => KernelEvent::ProcessExit { tgid },
            5 => KernelEvent::InputBlocked {
                writer: tgid,
                uid,
                comm,
                into: match login {
                    0 => Blocked::Terminal(key),
                    login => Blocked::Login(login),
                },
            },
            6 => KernelEvent::LoginInput { login },
            7 => KernelEvent::ListenerForked { child },
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }

    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        prop_assert_eq!(KernelEvent::decode(bytes), expected(bytes));
        Ok(())
    }

    #[test]
    fn fuzz_events_corpus_replays() {
        assert_eq!(
            Event::SIZE,
            48,
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
            any::<u64>(),
            any::<[u8; 16]>(),
        )
            .prop_map(
                |([kind, tgid, uid, child_tgid], [rdev, pts_dev], login, comm)| Event {
                    kind,
                    tgid,
                    uid,
                    child_tgid,
                    key: TtyKey { rdev, pts_dev },
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
            check(&bytes_of(&event))?;
        }
    }

    fn record(kind: EventKind, fill: impl FnOnce(&mut Event)) -> Vec<u8> {
        let mut raw = Event {
            kind: kind as u32,
            tgid: 700,
            uid: 1000,
            comm: *b"sshd\0\0\0\0\0\0\0\0\0\0\0\0",
            ..Event::default()
        };
        fill(&mut raw);
        // SAFETY: Event is plain old data.
        unsafe { std::slice::from_raw_parts((&raw as *const Event).cast::<u8>(), Event::SIZE) }
            .to_vec()
    }

    #[test]
    fn each_kind_decodes_to_what_it_says() {
        let key = TtyKey {
            rdev: 0x880_0003,
            pts_dev: 25,
        };
        fn decode(kind: EventKind, fill: impl FnOnce(&mut Event)) -> KernelEvent {
            KernelEvent::decode(&record(kind, fill)).unwrap()
        }
        assert_eq!(
            decode(EventKind::TtyFirstInput, |e| e.key = key),
            KernelEvent::TtyFirstInput { key, writer: 700 }
        );
        assert_eq!(
            decode(EventKind::ProcessExit, |_| {}),
            KernelEvent::ProcessExit { tgid: 700 }
        );
        assert_eq!(
            decode(EventKind::RevokedInputBlocked, |e| e.key = key),
            KernelEvent::InputBlocked {
                writer: 700,
                uid: 1000,
                comm: "sshd".into(),
                into: Blocked::Terminal(key)
            }
        );
        assert_eq!(
            decode(EventKind::RevokedInputBlocked, |e| e.login = 0xabc),
            KernelEvent::InputBlocked {
                writer: 700,
                uid: 1000,
                comm: "sshd".into(),
                into: Blocked::Login(0xabc)
            }
        );
        assert_eq!(
            decode(EventKind::LoginInput, |e| e.login = 0xabc),
            KernelEvent::LoginInput { login: 0xabc }
        );
        assert_eq!(
            decode(EventKind::ListenerForked, |e| e.child_tgid = 4242),
            KernelEvent::ListenerForked { child: 4242 }
        );
        let short = record(EventKind::LoginInput, |_| {});
        assert_eq!(
            KernelEvent::decode(&short[..Event::SIZE - 1]),
            Err(DecodeError::Short(Event::SIZE - 1))
        );
        let unknown = record(EventKind::LoginInput, |e| e.kind = 99);
        assert_eq!(
            KernelEvent::decode(&unknown),
            Err(DecodeError::UnknownKind(99))
        );
    }
}
