//! Programs loaded at start but attached only while the daemon has work for them
//! (see [`Needed`]). The console read exit runs on every `read(2)` of the host and
//! finds work only on consoles: a host without console logins pays nothing for it.
//!
//! The program is attached in the same turn of the daemon's loop that tracks a
//! console login, before any request can see the login. Input typed on the console
//! before that is not counted, which only makes the login look idle sooner. The
//! program's maps are the object's, attached or not.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    programs::{ProgramError, TracePoint, links::PinnedLink, trace_point::TracePointLinkId},
};

use super::{
    loader::{TracepointLink, attach_tracepoint},
    pins::PinDir,
    programs::{AttachPoint, Needed, ProgramSpec},
};

/// How long after a refused attach the daemon tries again (not on every turn of
/// its loop).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// One program on standby, and its link while attached.
pub struct Standby {
    pub spec: ProgramSpec,
    link: Option<Link>,
    retry_at: Option<Instant>,
}

enum Link {
    /// Owned by the program: pinning is off, or this kernel cannot pin links of
    /// perf events.
    Owned(TracePointLinkId),
    /// Pinned beside the other programs' links, so that it outlives a daemon that
    /// dies, as they do.
    Pinned(PinnedLink),
}

impl Standby {
    /// Loads `spec`'s program without attaching it. Only classic tracepoint
    /// programs are put on standby.
    pub fn load(ebpf: &mut Ebpf, spec: ProgramSpec) -> Result<Self, ProgramError> {
        program(ebpf, &spec)?.load()?;
        Ok(Self {
            spec,
            link: None,
            retry_at: None,
        })
    }

    pub fn attached(&self) -> bool {
        self.link.is_some()
    }

    /// Attaches or detaches the program for what the daemon tracks now.
    pub fn follow(&mut self, ebpf: &mut Ebpf, pins: Option<&PinDir>, console_logins: bool) {
        let wanted = match self.spec.needed {
            Needed::Always => true,
            Needed::WhileConsoleLogins => console_logins,
        };
        if wanted == self.attached() {
            return;
        }
        if !wanted {
            self.detach(ebpf);
            return;
        }
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        match self.attach(ebpf, pins) {
            Ok(()) => {
                self.retry_at = None;
                tracing::info!(
                    program = self.spec.name,
                    "attached {}: {}",
                    self.spec.attach,
                    self.spec.needed.describe()
                );
            }
            Err(err) => {
                self.retry_at = Some(now + RETRY_AFTER);
                tracing::warn!(
                    program = self.spec.name,
                    "could not attach {} ({err:#}); trying again in {RETRY_AFTER:?}",
                    self.spec.attach
                );
            }
        }
    }

    fn attach(&mut self, ebpf: &mut Ebpf, pins: Option<&PinDir>) -> Result<()> {
        let AttachPoint::Tracepoint { category, name } = self.spec.attach else {
            bail!("only tracepoint programs wait on standby");
        };
        let tp = program(ebpf, &self.spec)?;
        let pins = pins.filter(|p| p.links_pinned());
        let attached = attach_tracepoint(tp, category, name, pins.is_some())?;
        self.link = Some(match attached {
            TracepointLink::Owned(id) => Link::Owned(id),
            // Taken only when links are pinned.
            TracepointLink::Taken(link) => {
                let pinned = pins
                    .context("links are not pinned")
                    .and_then(|pins| pins.pin_link(self.spec.name, link));
                match pinned {
                    Ok(pinned) => Link::Pinned(pinned),
                    // The failed pin dropped (detached) the link: attached again,
                    // owned by the program.
                    Err(err) => {
                        tracing::warn!(
                            program = self.spec.name,
                            "not pinned ({err:#}): console input typed while the daemon \
                             restarts is not seen"
                        );
                        Link::Owned(tp.attach(category, name)?)
                    }
                }
            }
        });
        Ok(())
    }

    fn detach(&mut self, ebpf: &mut Ebpf) {
        let result = match self.link.take() {
            None => return,
            Some(Link::Owned(id)) => program(ebpf, &self.spec)
                .and_then(|tp| tp.detach(id))
                .map_err(anyhow::Error::from),
            Some(Link::Pinned(pinned)) => pinned.unpin().map(drop).map_err(anyhow::Error::from),
        };
        match result {
            Ok(()) => tracing::info!(
                program = self.spec.name,
                "detached {}: no longer needed",
                self.spec.attach
            ),
            Err(err) => tracing::warn!(
                program = self.spec.name,
                "detaching {}: {err:#}",
                self.spec.attach
            ),
        }
    }

    /// A clean stop: detached now, so that no pin of it outlives the daemon.
    pub fn release(&mut self, ebpf: &mut Ebpf) {
        self.detach(ebpf);
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, spec: &ProgramSpec) -> Result<&'a mut TracePoint, ProgramError> {
    ebpf.program_mut(spec.name)
        .ok_or(ProgramError::UnexpectedProgramType)?
        .try_into()
}
