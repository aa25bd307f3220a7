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

fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < Event::SIZE {
        tracing::warn!(len = bytes.len(), "short event in ring buffer");
        return None;
    }
    // SAFETY: Event is plain old data and the buffer is at least its size.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// What the events about logins say, decoded from the raw [`Event`].
#[allow(dead_code, reason = "API for the login model of issue 11")]
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
#[allow(dead_code, reason = "API for the login model of issue 11")]
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

#[cfg(test)]
mod tests {
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
