//! Carrying out the ends the core decided, off the core and in batches.
//!
//! The ends decided in one turn of the core are prepared together on the blocking
//! pool — the closing line, the targets found in /proc and held by pidfds — at most
//! [`PER_STEP`] per step, [`super::core::NOTICE_WRITERS`] steps at a time; then
//! each is signalled from an async task that waits for the exits. When a thousand
//! logins fall due together, one hand-off per end between the core, the async
//! workers and the blocking threads cost more than the work: a profile showed the
//! blocking threads' waking and parking at about a fifth of the daemon's CPU.

use std::{
    collections::HashMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::{Duration, Instant},
};

use session_monitor_common::TtyKey;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};

use super::{
    core::TerminationDone,
    enforcement::{SharedSnapshot, TreeRoots},
};
use crate::{
    enforce::{
        EndReason, notice,
        terminate::{self, Held},
    },
    sessions::{Pinned, ProcRef},
};

/// How many ends (or warnings) one blocking step prepares: enough to save the
/// hand-offs, few enough that the first of a burst is not held up by many others.
const PER_STEP: usize = 8;

/// `items` in batches of at most [`PER_STEP`], in order.
pub(super) fn in_steps<T>(items: Vec<T>) -> impl Iterator<Item = Vec<T>> {
    let mut items = items.into_iter().peekable();
    std::iter::from_fn(move || {
        items.peek()?;
        Some(items.by_ref().take(PER_STEP).collect())
    })
}

/// How long a session's server (sshd, mosh-server) may take to exit by itself after
/// the shell, forwarding the closing line, before it is signalled too.
const SERVER_FORWARDS_CLOSING_LINE: Duration = Duration::from_millis(200);

/// One login's end, as the core decided it.
pub(super) struct End {
    /// What the core is told when the end is over (the outcome is filled in).
    pub done: TerminationDone,
    pub decided: Instant,
    pub grace: Duration,
    pub work: Work,
}

/// What an end's blocking part needs: what to tell, where the login's processes
/// are found, and what must survive. (The login's id and the reason are in
/// [`End::done`].)
pub(super) struct Work {
    pub terminals: Vec<(ProcRef, TtyKey)>,
    pub closing: String,
    /// A server apart from the terminals' leaders forwards the closing line.
    pub forwarding: bool,
    pub first_leader: ProcRef,
    pub uid: u32,
    pub servers: Vec<ProcRef>,
    pub roots: TreeRoots,
    pub snapshots: SharedSnapshot,
    /// Processes that must survive (sshd listeners, shared terminal servers).
    pub never: Vec<u32>,
    /// For the log line.
    pub tty: String,
    pub user: String,
    pub transports: Vec<u32>,
}

/// An end ready to signal.
struct Prepared {
    held: Held,
    server_grace: Duration,
    notice_refused: Option<(TtyKey, String)>,
}

impl Work {
    /// The blocking part: the closing line, then the targets, held by pidfds. The
    /// leaders the line was written through stay held for the signals.
    fn prepare(self, session_id: &str, reason: EndReason) -> Prepared {
        let mut pinned: Vec<Pinned> = Vec::new();
        let delivery = notice::write_to_terminals(&self.terminals, &self.closing, &mut pinned);
        for (_, err) in &delivery.failed {
            tracing::debug!(id = %session_id, "closing line not written: {err}");
        }
        let written = delivery.written;
        let notice_refused = delivery.refused.into_iter().next_back();
        // The server forwards the line to the client once the shell is gone; give it
        // that moment before signalling it.
        let server_grace = if written && self.forwarding {
            SERVER_FORWARDS_CLOSING_LINE
        } else {
            Duration::ZERO
        };
        let tree = self.roots.tree(&self.snapshots);
        let plan = terminate::collect_targets(
            self.first_leader,
            self.uid,
            self.servers,
            tree,
            &self.never,
        );
        let held = plan.hold(pinned);
        let (tty, user, transports) = (&self.tty, &self.user, &self.transports);
        // At debug: "session ended" says at info what the end did (one line per end
        // instead of two; a thousand ends at once spent some 4 % of the daemon's
        // CPU on this one).
        tracing::debug!(id = %session_id, %tty, %user, %reason, processes = held.targets().len(), ?transports, own_cgroup = ?held.cgroup(), "ending session");
        Prepared {
            held,
            server_grace,
            notice_refused,
        }
    }
}

/// Starts `ends` (decided in one turn of the core); each comes back to the core
/// through `tx` when its processes are gone, or with `failed` set when a part of it
/// panicked (the session is then still open, and its end is tried again).
pub(super) fn start(ends: Vec<End>, steps: &Arc<Semaphore>, tx: &mpsc::Sender<TerminationDone>) {
    for batch in in_steps(ends) {
        tokio::spawn(run_batch(batch, steps.clone(), tx.clone()));
    }
}

async fn run_batch(batch: Vec<End>, steps: Arc<Semaphore>, tx: mpsc::Sender<TerminationDone>) {
    // What the core is told stays here: it hears of every end, whatever happens to
    // the blocking step.
    let (told, work): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|end| {
            let (id, reason) = (end.done.session_id.clone(), end.done.reason);
            ((end.done, end.decided, end.grace), (end.work, id, reason))
        })
        .unzip();
    let prepared = {
        let _permit = steps.acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            work.into_iter()
                .map(|(work, id, reason)| {
                    // One end that panics fails alone, not its whole batch.
                    catch_unwind(AssertUnwindSafe(move || work.prepare(&id, reason)))
                        .map_err(|panic| format!("preparing it panicked: {}", panic_text(&*panic)))
                })
                .collect::<Vec<_>>()
        })
        .await
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(err) => {
            let failed = joined_failure(&err);
            told.iter().map(|_| Err(failed.clone())).collect()
        }
    };
    let mut running = JoinSet::new();
    let mut waiting = HashMap::new();
    for ((done, decided, grace), prepared) in told.into_iter().zip(prepared) {
        match prepared {
            Ok(Prepared {
                held,
                server_grace,
                notice_refused,
            }) => {
                let escalation =
                    running.spawn(terminate::escalate(held, grace, server_grace, decided));
                let done = TerminationDone {
                    notice_refused,
                    ..done
                };
                waiting.insert(escalation.id(), done);
            }
            Err(failed) => {
                let done = TerminationDone {
                    failed: Some(failed),
                    ..done
                };
                let _ = tx.send(done).await;
            }
        }
    }
    while let Some(joined) = running.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, outcome)) => (id, Ok(outcome)),
            Err(err) => (err.id(), Err(joined_failure(&err))),
        };
        let Some(done) = waiting.remove(&id) else {
            continue;
        };
        let done = match result {
            Ok(outcome) => TerminationDone { outcome, ..done },
            Err(failed) => TerminationDone {
                failed: Some(failed),
                ..done
            },
        };
        let _ = tx.send(done).await;
    }
}

/// Why a task did not complete: it panicked, or it was cancelled.
fn joined_failure(err: &tokio::task::JoinError) -> String {
    if err.is_panic() {
        format!("the task ending it panicked: {err}")
    } else {
        format!("the task ending it was cancelled: {err}")
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panicked_is_told_apart_from_a_cancelled_one() {
        let panicked = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
        })
        .await
        .unwrap_err();
        assert!(
            joined_failure(&panicked).contains("panicked: "),
            "{panicked}"
        );
        let cancelled = tokio::spawn(std::future::pending::<()>());
        cancelled.abort();
        let cancelled = cancelled.await.unwrap_err();
        assert!(
            joined_failure(&cancelled).contains("cancelled"),
            "{cancelled}"
        );
    }

    #[test]
    fn batches_keep_every_item_in_order() {
        let batches: Vec<Vec<usize>> = in_steps((0..2 * PER_STEP + 1).collect()).collect();
        assert_eq!(batches.len(), 3);
        assert!(batches[..2].iter().all(|b| b.len() == PER_STEP));
        assert_eq!(batches.concat(), (0..2 * PER_STEP + 1).collect::<Vec<_>>());
        assert_eq!(in_steps(Vec::<u8>::new()).count(), 0);
    }

    #[test]
    fn a_panics_message_is_kept() {
        let caught = catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_text(&*caught), "boom 7");
        let caught = catch_unwind(|| panic!("boom")).unwrap_err();
        assert_eq!(panic_text(&*caught), "boom");
    }
}
