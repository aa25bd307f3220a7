//! Writing the warnings the core decided, off the core and in batches, as the ends
//! are carried out (see [`super::ending`]): a thousand logins warned together cost
//! the core one hand-off per batch, not one per login.

use std::sync::Arc;

use session_monitor_common::TtyKey;
use tokio::sync::{Semaphore, mpsc};

use super::{core::WarningWritten, ending::in_steps};
use crate::{
    enforce::notice,
    sessions::{Login, LoginKey, ProcRef},
};

/// One login's warning, as the core decided it.
pub(super) struct Warning {
    pub key: LoginKey,
    pub session_id: String,
    pub terminals: Vec<(ProcRef, TtyKey)>,
    pub text: String,
}

impl Warning {
    /// `text`, for the terminals of `login`.
    pub fn to(login: &Login, text: String) -> Self {
        Self {
            key: login.key,
            session_id: login.id.clone(),
            terminals: login.terminals.iter().map(|t| (t.leader, t.key)).collect(),
            text,
        }
    }

    /// Writes the line to each terminal; returns those that refused it.
    fn write(&self) -> Vec<(TtyKey, String)> {
        let delivery = notice::write_to_terminals(&self.terminals, &self.text, &mut Vec::new());
        for (tty, err) in delivery.failed {
            let (id, tty) = (&self.session_id, crate::sessions::tty_name(&tty));
            tracing::warn!(%id, "could not write the warning to {tty}: {err}");
        }
        delivery.refused
    }
}

/// Writes `warnings` (decided in one turn of the core), a few per blocking step;
/// terminals that refused a line come back to the core through `tx`, to be audited.
pub(super) fn start(
    warnings: Vec<Warning>,
    steps: &Arc<Semaphore>,
    tx: &mpsc::Sender<WarningWritten>,
) {
    for batch in in_steps(warnings) {
        let (steps, tx) = (steps.clone(), tx.clone());
        tokio::spawn(async move {
            let Ok(_permit) = steps.acquire_owned().await else {
                return;
            };
            let refusals = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|warning| {
                        let refused = warning.write();
                        (warning, refused)
                    })
                    .filter(|(_, refused)| !refused.is_empty())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (warning, refused) in refusals {
                let written = WarningWritten {
                    key: warning.key,
                    session_id: warning.session_id,
                    refused,
                };
                let _ = tx.send(written).await;
            }
        });
    }
}
