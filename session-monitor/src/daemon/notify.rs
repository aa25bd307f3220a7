//! systemd's notify protocol (sd_notify(3)), for `Type=notify` units: `READY=1` once
//! the probes are attached and the daemon answers, `WATCHDOG=1` from the main loop
//! (so a stuck loop stops the pings and systemd restarts the daemon), `STOPPING=1`
//! on the way out. One datagram per message to `$NOTIFY_SOCKET`; nothing when it is
//! unset (not started by systemd).

use std::{
    os::{linux::net::SocketAddrExt as _, unix::net::SocketAddr, unix::net::UnixDatagram},
    time::Duration,
};

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let target = var("NOTIFY_SOCKET").and_then(|path| {
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&path),
            };
            match addr.and_then(|addr| Ok((UnixDatagram::unbound()?, addr))) {
                Ok(target) => Some(target),
                Err(err) => {
                    tracing::warn!("NOTIFY_SOCKET `{path}` unusable: {err}");
                    None
                }
            }
        });
        let for_us = var("WATCHDOG_PID")
            .is_none_or(|pid| pid.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = var("WATCHDOG_USEC")
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us && target.is_some())
            .map(Duration::from_micros);
        Self { target, watchdog }
    }

    /// How often to send `WATCHDOG=1`: half the watchdog timeout, as sd_watchdog_enabled(3)
    /// advises. `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|timeout| timeout / 2)
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(err) = socket.send_to_addr(message.as_bytes(), addr)
        {
            tracing::warn!("cannot notify systemd: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket_and_the_watchdog_pings_at_half_its_timeout() {
        let path = std::env::temp_dir().join(format!("sm-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog: Some(Duration::from_secs(4)),
        };
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(2)));
        notifier.ready("watching");
        notifier.watchdog();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=watching");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        std::fs::remove_file(&path).unwrap();
    }
}
