//! Loads the eBPF object, chooses a backend by what the kernel allows, and attaches it.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{
        BtfTracePoint, FEntry, ProgramError, TracePoint, links::FdLink,
        trace_point::TracePointLinkId,
    },
};
use serde::Serialize;
use session_monitor_common::{
    CONFIG_GLOBAL, ProbeConfig,
    config::{KernelOffsets, KernelTypes, TracepointFields, flags},
    map_names,
};

use super::{
    btf, kfunc,
    maps::KernelMaps,
    pins::{self, PinDir},
    programs::{self, AttachPoint, Needed, ProgramSpec},
    standby::Standby,
    tracefs::{self, UdpSource},
};

/// The eBPF object, built by build.rs from `session-monitor-ebpf`.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/session-monitor"));

/// The embedded eBPF object.
#[cfg(test)]
pub(super) fn ebpf_object() -> &'static [u8] {
    EBPF_OBJECT
}

/// What the user asked for with `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// fentry where the kernel allows it, tracepoints otherwise.
    #[default]
    Auto,
    Fentry,
    Tracepoint,
}

/// The backend in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Fentry,
    Tracepoint,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Fentry => "fentry",
            Backend::Tracepoint => "tracepoint",
        })
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub backend: BackendChoice,
    /// Terminals the kernel tracks at once (map size).
    pub max_ttys: u32,
    /// Processes the kernel tracks at once (map size): by default every process the
    /// host can have ([`max_processes`]).
    pub max_procs: u32,
    /// Minimum interval between two input notices for one terminal.
    pub notice_interval: Duration,
    /// Stop input of revoked users in the kernel.
    pub kernel_revoke: bool,
    /// Where the maps and links are pinned to survive a restart ([`pins`]); `None`:
    /// nothing is pinned, the kernel side lives and dies with the daemon.
    pub pin_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            max_ttys: 16384,
            max_procs: max_processes(),
            notice_interval: Duration::from_secs(1),
            kernel_revoke: true,
            pin_dir: Some(PathBuf::from(pins::DEFAULT_PIN_DIR)),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AttachedProgram {
    pub name: &'static str,
    pub attach: String,
    pub probe: &'static str,
}

impl AttachedProgram {
    fn of(spec: &ProgramSpec) -> Self {
        Self {
            name: spec.name,
            attach: spec.attach.to_string(),
            probe: spec.probe.name(),
        }
    }
}

/// The loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub backend: Backend,
    /// The programs attached from start to stop.
    attached: Vec<AttachedProgram>,
    /// Programs attached only while they have work (see [`Needed`]).
    standby: Vec<Standby>,
    /// Programs of the backend that this kernel lacks (optional ones only).
    pub skipped: Vec<String>,
    pub offsets: KernelOffsets,
    pub udp_source: Option<UdpSource>,
    /// Why `auto` did not pick fentry, when it did not.
    pub fallback_reason: Option<String>,
    pub kernel_revoke: bool,
    /// The pinned kernel state, when pinning is on.
    pub pins: Option<PinDir>,
}

impl Probes {
    /// A clean stop: the programs detach with the daemon, the maps stay pinned.
    pub fn release(&mut self) {
        if let Some(pins) = &mut self.pins {
            pins.release_links();
        }
        for standby in &mut self.standby {
            standby.release(&mut self.ebpf);
        }
    }

    /// Attaches the programs on standby that have work now, and detaches those that
    /// have none; `console_logins`: some login has a console terminal.
    pub fn follow_logins(&mut self, console_logins: bool) {
        for standby in &mut self.standby {
            standby.follow(&mut self.ebpf, self.pins.as_ref(), console_logins);
        }
    }

    /// The programs attached now.
    pub fn attached(&self) -> Vec<AttachedProgram> {
        let standby = self
            .standby
            .iter()
            .filter(|s| s.attached())
            .map(|s| AttachedProgram::of(&s.spec));
        self.attached.iter().cloned().chain(standby).collect()
    }

    /// The programs attached only while they have work, and whether they are now.
    pub fn standby(&self) -> impl Iterator<Item = (AttachedProgram, Needed, bool)> + '_ {
        self.standby
            .iter()
            .map(|s| (AttachedProgram::of(&s.spec), s.spec.needed, s.attached()))
    }
}

/// What the programs are configured with: facts about the running kernel.
struct KernelFacts<'a> {
    offsets: KernelOffsets,
    tracepoints: TracepointFields,
    types: KernelTypes,
    btf: &'a aya::Btf,
    /// The same BTF, for looking up functions (fentry targets) before loading.
    vmlinux: &'a btf_rs::Btf,
    tracefs: &'a std::path::Path,
}

/// Loads, chooses the backend and attaches. Returns the probes, their maps and the
/// ring buffer of events.
pub fn load(opts: &LoadOptions) -> Result<(Probes, KernelMaps, RingBuf<MapData>)> {
    raise_memlock();
    let kernel_btf = btf::kernel_btf()?;
    let offsets =
        btf::resolve_offsets(&kernel_btf).context("resolving kernel structure offsets from BTF")?;
    let types = btf::resolve_types(&kernel_btf).context("resolving kernel types from BTF")?;
    let tracefs = tracefs::ensure_tracefs()?;
    let aya_btf = aya::Btf::from_sys_fs().context("reading kernel BTF for fentry programs")?;
    let mut pins = match &opts.pin_dir {
        Some(root) => {
            let maps = pins::pinnable_maps(EBPF_OBJECT, &map_sizes(opts))?;
            Some(PinDir::prepare(root, &maps)?)
        }
        None => None,
    };

    let mut fallback_reason = None;
    let try_fentry = match opts.backend {
        BackendChoice::Tracepoint => false,
        BackendChoice::Fentry => true,
        BackendChoice::Auto => true,
    };
    if try_fentry {
        let kernel = KernelFacts {
            offsets,
            tracepoints: TracepointFields::default(),
            types,
            btf: &aya_btf,
            vmlinux: &kernel_btf,
            tracefs: &tracefs,
        };
        match load_with_revoke_fallback(opts, &kernel, Backend::Fentry, pins.as_ref()) {
            Ok((mut probes, maps, ring, links)) => {
                pin_links(&mut pins, links);
                probes.pins = pins;
                return Ok((probes, maps, ring));
            }
            Err(err) if opts.backend == BackendChoice::Auto => {
                tracing::info!("fentry backend unavailable, using tracepoints: {err:#}");
                fallback_reason = Some(format!("{err:#}"));
            }
            Err(err) => return Err(err.context("--backend fentry")),
        }
    }
    let (udp, passed_over) = tracefs::udp_source(&tracefs, &offsets);
    if let Some(why) = passed_over {
        tracing::warn!("{why}");
    }
    let fields =
        tracefs::resolve_fields(&tracefs, udp).context("resolving tracepoint record layouts")?;
    let kernel = KernelFacts {
        offsets,
        tracepoints: fields,
        types,
        btf: &aya_btf,
        vmlinux: &kernel_btf,
        tracefs: &tracefs,
    };
    let (mut probes, maps, ring, links) =
        load_with_revoke_fallback(opts, &kernel, Backend::Tracepoint, pins.as_ref())
            .context("--backend tracepoint")?;
    probes.udp_source = Some(udp);
    probes.fallback_reason = fallback_reason;
    pin_links(&mut pins, links);
    probes.pins = pins;
    Ok((probes, maps, ring))
}

/// Maps the loader sizes from its options rather than from the object.
fn map_sizes(opts: &LoadOptions) -> [(&'static str, u32); 3] {
    [
        (map_names::TTY_ACTIVITY, opts.max_ttys),
        (map_names::PTS_ACTIVITY, opts.max_ttys),
        (map_names::PROCS, opts.max_procs),
    ]
}

/// Pins the links of the attached programs. Without pinned links the maps still
/// survive a restart; only input during the restart is missed, so a failure here is
/// a warning.
fn pin_links(pins: &mut Option<PinDir>, links: Option<Vec<(&'static str, FdLink)>>) {
    let (Some(pins), Some(links)) = (pins.as_mut(), links) else {
        if pins.is_some() {
            tracing::warn!(
                "this kernel cannot pin the programs' links (no BPF links for perf events, \
                 Linux 5.15+): input typed while the daemon restarts is not seen"
            );
        }
        return;
    };
    if let Err(err) = pins.pin_links(links) {
        tracing::warn!("{err:#}; input typed while the daemon restarts is not seen");
    }
}

/// What one load attempt gives: the probes, their maps, the event ring buffer, and
/// the links to pin (`None` when they cannot be pinned on this kernel).
type Loaded = (
    Probes,
    KernelMaps,
    RingBuf<MapData>,
    Option<Vec<(&'static str, FdLink)>>,
);

/// In-kernel revocation needs `bpf_send_signal`; where the kernel refuses the
/// programs that call it, load them without it and let the daemon alone revoke.
fn load_with_revoke_fallback(
    opts: &LoadOptions,
    kernel: &KernelFacts<'_>,
    backend: Backend,
    pins: Option<&PinDir>,
) -> Result<Loaded> {
    match load_backend(opts, kernel, backend, pins) {
        Err(err) if opts.kernel_revoke => {
            let without = LoadOptions {
                kernel_revoke: false,
                ..opts.clone()
            };
            match load_backend(&without, kernel, backend, pins) {
                Ok(loaded) => {
                    tracing::warn!(
                        "in-kernel revocation unavailable, revoking from user space only: {err:#}"
                    );
                    Ok(loaded)
                }
                Err(_) => Err(err),
            }
        }
        other => other,
    }
}

/// The kernel's pid limit, which no pid reaches.
const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;

/// How many processes this host can have at once: no more than `kernel.pid_max`
/// pids and `kernel.threads-max` tasks. Map `PROCS` gets this many entries, so that
/// no user can fill it to escape fork tracking; it is not preallocated, so only live
/// entries take memory (the bucket array takes 16 bytes per entry, rounded up to a
/// power of two: threads-max is about one per 128 KiB of RAM, so at most ~0.01 %).
pub fn max_processes() -> u32 {
    let read =
        |path: &str| -> Option<u32> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let pid_max = read("/proc/sys/kernel/pid_max").unwrap_or(PID_MAX_LIMIT);
    let threads_max = read("/proc/sys/kernel/threads-max").unwrap_or(PID_MAX_LIMIT);
    processes_limit(pid_max, threads_max)
}

/// [`max_processes`] from the two settings: the smaller, within sane bounds.
fn processes_limit(pid_max: u32, threads_max: u32) -> u32 {
    pid_max.min(threads_max).clamp(4096, PID_MAX_LIMIT)
}

/// RLIMIT_MEMLOCK only matters before Linux 5.11 (BPF memory is accounted by cgroup
/// since); some sandboxes forbid raising it, which must not be fatal.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on Linux 5.11+",
            std::io::Error::last_os_error()
        );
    }
}

fn load_backend(
    opts: &LoadOptions,
    kernel: &KernelFacts<'_>,
    backend: Backend,
    pins: Option<&PinDir>,
) -> Result<Loaded> {
    let specs = match backend {
        Backend::Fentry => programs::fentry_backend(),
        Backend::Tracepoint => {
            programs::tracepoint_backend(tracefs::udp_source(kernel.tracefs, &kernel.offsets).0)
        }
    };
    // Preflight that needs no kernel round trip: does every fentry target exist?
    let mut skipped = Vec::new();
    let mut to_attach = Vec::new();
    for mut spec in specs {
        if let AttachPoint::FEntry { function } = spec.attach
            && !btf::has_function(kernel.vmlinux, function)
        {
            let renamed = spec
                .renamed
                .iter()
                .find(|name| btf::has_function(kernel.vmlinux, name));
            if let Some(&function) = renamed {
                spec.attach = AttachPoint::FEntry { function };
                to_attach.push(spec);
                continue;
            }
            if spec.optional {
                skipped.push(format!(
                    "{} ({}): not in this kernel",
                    spec.name, spec.attach
                ));
                continue;
            }
            bail!(
                "the kernel has no function `{function}` for program {}",
                spec.name
            );
        }
        to_attach.push(spec);
    }

    let config = ProbeConfig {
        offsets: kernel.offsets,
        tracepoints: kernel.tracepoints,
        types: kernel.types,
        flags: if opts.kernel_revoke {
            flags::KERNEL_REVOKE
        } else {
            0
        },
        self_tgid: std::process::id(),
        padding: Default::default(),
        notice_interval_ns: opts.notice_interval.as_nanos() as u64,
    };
    let mut loader = EbpfLoader::new();
    loader.override_global(CONFIG_GLOBAL, &config, true);
    for (name, size) in map_sizes(opts) {
        loader.map_max_entries(name, size);
    }
    let pinned = match pins {
        Some(pins) => pins::pinnable_maps(EBPF_OBJECT, &map_sizes(opts))?
            .into_iter()
            .map(|m| (m.name.clone(), pins.map_path(&m.name)))
            .collect(),
        None => Vec::new(),
    };
    for (name, path) in &pinned {
        loader.map_pin_path(name.as_str(), path.as_path());
    }
    let object = kfunc::patch(EBPF_OBJECT, kernel.types.rdonly_cast);
    tracing::debug!(
        calls = object.calls,
        kfunc = kernel.types.rdonly_cast,
        "bpf_rdonly_cast calls patched"
    );
    let mut ebpf = loader
        .load(object.bytes())
        .context("loading the eBPF object")?;
    init_ebpf_log(&mut ebpf);

    let (to_attach, on_standby): (Vec<_>, Vec<_>) = to_attach
        .into_iter()
        .partition(|spec| spec.needed == Needed::Always);
    let refused = |spec: &ProgramSpec, err: ProgramError| {
        anyhow!(
            "the kernel refused program {} ({}): {}{}",
            spec.name,
            spec.attach,
            describe(&err),
            refusal_hint(backend, &err)
        )
    };
    let standby = on_standby
        .into_iter()
        .map(|spec| Standby::load(&mut ebpf, spec).map_err(|err| refused(&spec, err)))
        .collect::<Result<Vec<_>>>()?;
    let mut attached = Vec::new();
    let mut links = pins.map(|_| Vec::new());
    for spec in &to_attach {
        attach(&mut ebpf, spec, kernel.btf, &mut links).map_err(|err| refused(spec, err))?;
        attached.push(AttachedProgram::of(spec));
    }
    let (maps, ring) = KernelMaps::take(&mut ebpf)?;
    tracing::info!(
        %backend,
        programs = attached.len(),
        "attached probes: {}",
        attached.iter().map(|p| p.attach.as_str()).collect::<Vec<_>>().join(", ")
    );
    for s in &standby {
        tracing::info!(
            "on standby: {}, attached {}",
            s.spec.attach,
            s.spec.needed.describe()
        );
    }
    Ok((
        Probes {
            ebpf,
            backend,
            attached,
            standby,
            skipped,
            offsets: kernel.offsets,
            udp_source: None,
            fallback_reason: None,
            kernel_revoke: opts.kernel_revoke,
            pins: None,
        },
        maps,
        ring,
        links,
    ))
}

/// The refusal in words; the verifier's log only when it said something.
fn describe(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if log.trim().is_empty() {
                format!("the BPF_PROG_LOAD syscall returned {io_error}")
            } else {
                format!("the BPF_PROG_LOAD syscall returned {io_error}; verifier output:\n{log}")
            }
        }
        other => other.to_string(),
    }
}

/// The kernel's internal ENOTSUPP, which leaks to user space from BPF syscalls.
const KERNEL_ENOTSUPP: i32 = 524;

/// Why the kernel said no, in words, for the most common refusals.
fn refusal_hint(backend: Backend, err: &ProgramError) -> &'static str {
    let errno = match err {
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    match (backend, errno) {
        (Backend::Fentry, Some(libc::EPERM | libc::EOPNOTSUPP | KERNEL_ENOTSUPP)) => {
            ". This kernel does not allow BPF trampolines (fentry/fexit), as hardened kernels \
             often do; use --backend tracepoint (or auto, which falls back by itself)"
        }
        (Backend::Tracepoint, Some(libc::ENOENT)) => {
            ". The tracepoint does not exist on this kernel (CONFIG_FTRACE_SYSCALLS?)"
        }
        (_, Some(libc::EPERM)) | (_, Some(libc::EACCES)) => {
            ". Loading BPF programs needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"
        }
        _ => "",
    }
}

/// Loads and attaches one program. With `links` (pinning on), the link is taken out
/// of the program to be pinned, so that it outlives the daemon; a kernel whose link
/// cannot be pinned (perf events attached without BPF links) turns pinning off for
/// every program (`links` becomes `None`) and the program stays attached as usual.
fn attach(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    btf: &aya::Btf,
    links: &mut Option<Vec<(&'static str, FdLink)>>,
) -> Result<(), ProgramError> {
    let program = ebpf
        .program_mut(spec.name)
        .ok_or(ProgramError::UnexpectedProgramType)?;
    match spec.attach {
        AttachPoint::Tracepoint { category, name } => {
            let tp: &mut TracePoint = program.try_into()?;
            tp.load()?;
            match attach_tracepoint(tp, category, name, links.is_some())? {
                TracepointLink::Taken(link) => {
                    if let Some(pinning) = links {
                        pinning.push((spec.name, link));
                    }
                }
                TracepointLink::Owned(_) => *links = None,
            }
        }
        AttachPoint::FEntry { function } => {
            let fentry: &mut FEntry = program.try_into()?;
            fentry.load(function, btf)?;
            let id = fentry.attach()?;
            if let Some(pinning) = links {
                pinning.push((spec.name, FdLink::from(fentry.take_link(id)?)));
            }
        }
        AttachPoint::BtfTracepoint { name } => {
            let tp: &mut BtfTracePoint = program.try_into()?;
            tp.load(name, btf)?;
            let id = tp.attach()?;
            // Pinned too: forks during a restart still join their login.
            if let Some(pinning) = links {
                pinning.push((spec.name, FdLink::from(tp.take_link(id)?)));
            }
        }
    }
    Ok(())
}

/// A classic tracepoint program's link, once attached.
pub(super) enum TracepointLink {
    /// Owned by the program: detached with it.
    Owned(TracePointLinkId),
    /// Taken out of the program, to be pinned.
    Taken(FdLink),
}

/// Attaches `tp` (loaded) to `category:name`; with `take`, takes the link out of the
/// program to be pinned. Where this kernel cannot make a BPF link of a perf event
/// (before 5.15), the conversion drops (detaches) the link: the program is then
/// attached again, its link owned by it, and `Owned` tells the caller so.
pub(super) fn attach_tracepoint(
    tp: &mut TracePoint,
    category: &str,
    name: &str,
    take: bool,
) -> Result<TracepointLink, ProgramError> {
    let id = tp.attach(category, name)?;
    if !take {
        return Ok(TracepointLink::Owned(id));
    }
    match FdLink::try_from(tp.take_link(id)?) {
        Ok(link) => Ok(TracepointLink::Taken(link)),
        Err(_) => Ok(TracepointLink::Owned(tp.attach(category, name)?)),
    }
}

/// Forwards the programs' aya-log records to `tracing` (through the `log` bridge).
/// Only inside an async runtime: the logger owns the log map, and dropping it unused
/// would close the map under the programs before they load (outside the daemon, e.g.
/// in the probe-level tests, the records stay unread in the map instead).
fn init_ebpf_log(ebpf: &mut Ebpf) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => {
            handle.spawn(async move {
                // SAFETY: the logger owns its ring-buffer fd for as long as it lives.
                let registered = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        logger,
                        tokio::io::Interest::READABLE,
                    )
                };
                let Ok(mut fd) = registered else {
                    return;
                };
                loop {
                    let Ok(mut guard) = fd.readable_mut().await else {
                        return;
                    };
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            });
        }
        Err(err) => tracing::debug!("eBPF logging unavailable: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_map_holds_every_process_the_host_can_have() {
        // A systemd host: pid_max raised to the limit, tasks bounded by memory.
        assert_eq!(processes_limit(4_194_304, 192_726), 192_726);
        // The kernel's default pid_max on a large machine.
        assert_eq!(processes_limit(32_768, 1_000_000), 32_768);
        assert_eq!(processes_limit(100, 100), 4096);
        assert_eq!(processes_limit(u32::MAX, u32::MAX), PID_MAX_LIMIT);
    }

    #[test]
    fn this_host_gets_at_least_its_pid_max() {
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let threads_max: u32 = std::fs::read_to_string("/proc/sys/kernel/threads-max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(max_processes(), pid_max.min(threads_max).max(4096));
    }
}
