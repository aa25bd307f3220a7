//! A real Mosh session: `mosh-client` in a root tmux pane, `mosh-server` started over
//! [`Sshd`] as the test user.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::{
    Sshd, TestUser, process, shell_quote,
    tmux::{Pane, Tmux},
    wait::Wait,
};

const SESSION: &str = "mosh";

/// A connected Mosh session. Dropping it ends the client (with its tmux server) and
/// the user's mosh-server.
pub struct Mosh {
    tmux: Tmux,
    uid: u32,
}

impl Mosh {
    /// Runs `mosh --ssh="<ssh to sshd>" user@127.0.0.1` in a tmux pane and waits
    /// until both mosh-client and the user's mosh-server run.
    pub fn connect(sshd: &Sshd, user: &TestUser) -> Mosh {
        let tmux = Tmux::new();
        let command = format!(
            "mosh --ssh={} {}@127.0.0.1",
            shell_quote(&sshd.mosh_ssh_option()),
            user.name()
        );
        tmux.new_session(SESSION, &command);
        let mosh = Mosh {
            tmux,
            uid: user.uid(),
        };
        let connected = Wait::new("mosh-client and mosh-server to run")
            .timeout(Duration::from_secs(30))
            .try_until_ok(|| match (mosh.client_pid(), mosh.server_pid()) {
                (Some(_), Some(_)) => Ok(()),
                (client, server) => Err(format!("client {client:?}, server {server:?}")),
            });
        if let Err(message) = connected {
            let screen = if mosh.tmux.has_session(SESSION) {
                mosh.pane().capture()
            } else {
                "(the pane is gone: mosh exited)".to_string()
            };
            panic!("{message}\nmosh pane:\n{screen}");
        }
        mosh
    }

    /// The pane mosh-client runs in: type here to type into the session.
    pub fn pane(&self) -> Pane<'_> {
        self.tmux.pane(SESSION)
    }

    /// The tmux server holding the client.
    pub fn tmux(&self) -> &Tmux {
        &self.tmux
    }

    /// The mosh-client process, while it runs.
    pub fn client_pid(&self) -> Option<u32> {
        let server = self.tmux.server_pid()?;
        let mut pids = process::descendants(server);
        pids.push(server);
        pids.into_iter().find(|&pid| {
            process::get(pid).is_some_and(|p| p.comm == "mosh-client" && p.state != 'Z')
        })
    }

    /// The user's mosh-server process, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        process::by_comm("mosh-server", Some(self.uid))
            .into_iter()
            .next()
    }

    /// SIGKILLs mosh-client: the server stops hearing from it, as when a laptop
    /// drops off the network.
    pub fn kill_client(&self) {
        let pid = self.client_pid().expect("mosh-client is not running");
        process::signal(pid, Signal::SIGKILL);
    }
}

impl Drop for Mosh {
    fn drop(&mut self) {
        let servers = process::by_comm("mosh-server", Some(self.uid));
        process::kill_all(&servers);
    }
}
