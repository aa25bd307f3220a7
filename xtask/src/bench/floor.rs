//! The floor: empty programs (`r0 = 0; exit`) on exactly the attach points the
//! daemon's loader attached, so that a run with them shows what the hooks cost by
//! themselves, which no program can remove. The attach points come from the
//! daemon's own account (`status --json`, `programs[].attach`), so they follow the
//! loader whatever it attaches; the programs are loaded and attached the way aya
//! attaches the daemon's (a perf event for a classic tracepoint, a raw tracepoint
//! link for `tp_btf` and `fentry`), so the kernel runs the same path to reach them.

use std::{
    ffi::CString,
    fs,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use btf_rs::{Btf, Type};

/// One attach point, as the daemon's status names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachPoint {
    /// `tracepoint/CATEGORY/NAME`
    Tracepoint { category: String, name: String },
    /// `tp_btf/NAME`
    BtfTracepoint(String),
    /// `raw_tp/NAME` (or `raw_tracepoint/NAME`)
    RawTracepoint(String),
    /// `fentry/FUNCTION`
    FEntry(String),
    /// `fexit/FUNCTION`
    FExit(String),
}

impl AttachPoint {
    pub fn parse(text: &str) -> Result<Self> {
        let (kind, rest) = text
            .split_once('/')
            .with_context(|| format!("attach point `{text}` has no kind"))?;
        Ok(match kind {
            "tracepoint" => {
                let (category, name) = rest
                    .split_once('/')
                    .with_context(|| format!("tracepoint `{text}` has no category"))?;
                Self::Tracepoint {
                    category: category.into(),
                    name: name.into(),
                }
            }
            "tp_btf" => Self::BtfTracepoint(rest.into()),
            "raw_tp" | "raw_tracepoint" => Self::RawTracepoint(rest.into()),
            "fentry" => Self::FEntry(rest.into()),
            "fexit" => Self::FExit(rest.into()),
            _ => bail!("attach point `{text}`: the floor knows no `{kind}` programs"),
        })
    }
}

impl std::fmt::Display for AttachPoint {
    /// As the daemon's status names it (what [`AttachPoint::parse`] reads).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tracepoint { category, name } => write!(f, "tracepoint/{category}/{name}"),
            Self::BtfTracepoint(name) => write!(f, "tp_btf/{name}"),
            Self::RawTracepoint(name) => write!(f, "raw_tp/{name}"),
            Self::FEntry(function) => write!(f, "fentry/{function}"),
            Self::FExit(function) => write!(f, "fexit/{function}"),
        }
    }
}

/// Empty programs attached; dropping it detaches them.
pub struct Floor {
    /// Each attach point with its empty program's id, by which its statistics are
    /// read (what a program run costs there with nothing in it).
    programs: Vec<(AttachPoint, u32)>,
    /// Links, perf events and programs (the links first, so they go first).
    _fds: Vec<OwnedFd>,
}

impl Floor {
    /// Attaches one empty program to each attach point.
    pub fn attach(points: &[AttachPoint]) -> Result<Self> {
        let mut btf = None;
        let mut fds = Vec::new();
        let mut programs = Vec::new();
        for point in points {
            let attached = match point {
                AttachPoint::Tracepoint { category, name } => {
                    let id = tracepoint_id(category, name)?;
                    let prog = load(PROG_TYPE_TRACEPOINT, 0, 0, name)?;
                    let event = perf_tracepoint(id, &prog)?;
                    vec![event, prog]
                }
                AttachPoint::BtfTracepoint(name) => {
                    let btf = vmlinux(&mut btf)?;
                    let id = btf_id(btf, &format!("btf_trace_{name}"), |t| {
                        matches!(t, Type::Typedef(_))
                    })?;
                    let prog = load(PROG_TYPE_TRACING, ATTACH_TRACE_RAW_TP, id, name)?;
                    vec![raw_tracepoint_open(&prog, None)?, prog]
                }
                AttachPoint::RawTracepoint(name) => {
                    let prog = load(PROG_TYPE_RAW_TRACEPOINT, 0, 0, name)?;
                    let name = CString::new(name.as_str())?;
                    vec![raw_tracepoint_open(&prog, Some(&name))?, prog]
                }
                AttachPoint::FEntry(function) | AttachPoint::FExit(function) => {
                    let btf = vmlinux(&mut btf)?;
                    let id = btf_id(btf, function, |t| matches!(t, Type::Func(_)))?;
                    let attach = if matches!(point, AttachPoint::FEntry(_)) {
                        ATTACH_TRACE_FENTRY
                    } else {
                        ATTACH_TRACE_FEXIT
                    };
                    let prog = load(PROG_TYPE_TRACING, attach, id, function)?;
                    vec![raw_tracepoint_open(&prog, None)?, prog]
                }
            };
            // Each point's fds end with its program's.
            let prog = attached.last().expect("a program per point");
            programs.push((point.clone(), program_id(prog)?));
            fds.extend(attached);
        }
        Ok(Self {
            programs,
            _fds: fds,
        })
    }

    /// Each attach point with the id of its empty program.
    pub fn programs(&self) -> &[(AttachPoint, u32)] {
        &self.programs
    }
}

/// The kernel's id of a loaded program (BPF_OBJ_GET_INFO_BY_FD, the first two
/// members of `struct bpf_prog_info`: its type and its id).
fn program_id(prog: &OwnedFd) -> Result<u32> {
    use std::os::fd::AsRawFd as _;
    let mut info = [0u32; 2];
    let attr = InfoByFdAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // The kernel writes at most `info_len` bytes to `info`.
    if sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) != 0 {
        return Err(std::io::Error::last_os_error()).context("reading an empty program's id");
    }
    Ok(info[1])
}

fn vmlinux(cache: &mut Option<Btf>) -> Result<&Btf> {
    if cache.is_none() {
        *cache =
            Some(Btf::from_file("/sys/kernel/btf/vmlinux").context("reading the kernel's BTF")?);
    }
    Ok(cache.as_ref().expect("just set"))
}

fn btf_id(btf: &Btf, name: &str, wanted: impl Fn(&Type) -> bool) -> Result<u32> {
    let ids = btf
        .resolve_ids_by_name(name)
        .with_context(|| format!("no `{name}` in the kernel's BTF"))?;
    ids.into_iter()
        .find(|&id| btf.resolve_type_by_id(id).is_ok_and(|t| wanted(&t)))
        .with_context(|| format!("no `{name}` of the right kind in the kernel's BTF"))
}

fn tracepoint_id(category: &str, name: &str) -> Result<u64> {
    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|d| Path::new(d).join("events").is_dir())
        .context("tracefs is not mounted")?;
    let path = format!("{tracefs}/events/{category}/{name}/id");
    fs::read_to_string(&path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {path}"))
}

// The kernel's ABI (include/uapi/linux/bpf.h, perf_event.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const PROG_TYPE_TRACEPOINT: u32 = 5;
const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const PROG_TYPE_TRACING: u32 = 26;
const ATTACH_TRACE_RAW_TP: u32 = 23;
const ATTACH_TRACE_FENTRY: u32 = 24;
const ATTACH_TRACE_FEXIT: u32 = 25;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// `r0 = 0; exit`: the empty program.
const EMPTY: [u64; 2] = [0xb7, 0x95];

/// The leading part of `union bpf_attr` for BPF_PROG_LOAD; the rest stays zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    _rest: [u32; 9],
}

/// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN.
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
    cookie: u64,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The first version of `struct perf_event_attr` (PERF_ATTR_SIZE_VER0, 64 bytes),
/// which the kernel still takes.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// The `bpf(2)` system call with `attr`, a valid `union bpf_attr` prefix for `cmd`
/// (whatever it points to lives across the call); its raw return value.
fn sys_bpf<T>(cmd: libc::c_long, attr: &T) -> libc::c_long {
    // SAFETY: as the caller promises; the kernel reads `attr` only during the call.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            size_of::<T>() as libc::c_uint,
        )
    }
}

/// A `bpf(2)` command that returns a new descriptor.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> Result<OwnedFd> {
    owned(sys_bpf(cmd, attr))
}

fn owned(fd: libc::c_long) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: the kernel just returned this descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn load(prog_type: u32, attach_type: u32, attach_btf_id: u32, name: &str) -> Result<OwnedFd> {
    let license = CString::new("GPL").expect("no NUL");
    let mut log = vec![0u8; 4096];
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: EMPTY.len() as u32,
        insns: EMPTY.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: attach_type,
        attach_btf_id,
        ..Default::default()
    };
    for (dst, src) in attr.prog_name.iter_mut().zip(b"floor".iter()) {
        *dst = *src;
    }
    bpf(BPF_PROG_LOAD, &attr).with_context(|| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        format!(
            "loading an empty program for `{name}`: {}",
            String::from_utf8_lossy(&log[..end]).trim()
        )
    })
}

/// Attaches a raw tracepoint program to the tracepoint `name`, or a BTF-typed one
/// (`tp_btf`, fentry, fexit) to the target it was loaded for (`name` None).
fn raw_tracepoint_open(prog: &OwnedFd, name: Option<&CString>) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let attr = RawTracepointAttr {
        name: name.map_or(0, |n| n.as_ptr() as u64),
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_RAW_TRACEPOINT_OPEN, &attr).context("attaching an empty program")
}

fn perf_tracepoint(id: u64, prog: &OwnedFd) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        wakeup_events: 1,
        ..Default::default()
    };
    // SAFETY: a valid perf_event_attr of the size it declares; pid -1 with cpu 0 is
    // how a tracepoint is opened for BPF (the program runs on every CPU).
    let fd = owned(unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            std::ptr::from_ref(&attr),
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    })
    .context("perf_event_open of a tracepoint")?;
    for (request, arg) in [
        (PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()),
        (PERF_EVENT_IOC_ENABLE, 0),
    ] {
        // SAFETY: ioctls on a perf event we own, with an integer argument.
        if unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) } != 0 {
            return Err(std::io::Error::last_os_error()).context("attaching an empty program");
        }
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_daemons_attach_points() {
        assert_eq!(
            AttachPoint::parse("tracepoint/syscalls/sys_enter_write").unwrap(),
            AttachPoint::Tracepoint {
                category: "syscalls".into(),
                name: "sys_enter_write".into()
            }
        );
        assert_eq!(
            AttachPoint::parse("tp_btf/sched_process_fork").unwrap(),
            AttachPoint::BtfTracepoint("sched_process_fork".into())
        );
        assert_eq!(
            AttachPoint::parse("fentry/tty_write").unwrap(),
            AttachPoint::FEntry("tty_write".into())
        );
        assert_eq!(
            AttachPoint::parse("raw_tp/sys_enter").unwrap(),
            AttachPoint::RawTracepoint("sys_enter".into())
        );
        for text in [
            "tracepoint/syscalls/sys_enter_write",
            "tp_btf/sched_process_exit",
            "raw_tp/sys_enter",
            "fentry/tty_write",
            "fexit/tty_write",
        ] {
            assert_eq!(AttachPoint::parse(text).unwrap().to_string(), text);
        }
        assert!(AttachPoint::parse("kprobe/x").is_err());
        assert!(AttachPoint::parse("tracepoint/nocategory").is_err());
    }

    /// Loads and attaches empty programs on this kernel, of each kind it allows
    /// (fentry needs trampolines, which the project's machines refuse).
    #[test]
    fn attaches_empty_programs_on_this_kernel() {
        assert!(
            rustix::process::geteuid().is_root(),
            "loading BPF programs needs root: run the tests as root"
        );
        let points: Vec<AttachPoint> = [
            "tracepoint/syscalls/sys_enter_getppid",
            "tp_btf/sched_process_fork",
            "raw_tp/sys_enter",
        ]
        .iter()
        .map(|p| AttachPoint::parse(p).unwrap())
        .collect();
        let floor = Floor::attach(&points).unwrap_or_else(|e| panic!("{e:#}"));
        // A link, or a perf event, and a program for each point.
        assert_eq!(floor._fds.len(), 2 * points.len());
        // Each point's program, by an id the kernel knows, of its own.
        let ids: Vec<u32> = floor.programs().iter().map(|&(_, id)| id).collect();
        assert_eq!(
            floor.programs().iter().map(|(p, _)| p).collect::<Vec<_>>(),
            points.iter().collect::<Vec<_>>()
        );
        let known = super::super::bpf::programs(&ids).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(known.len(), points.len(), "{known:?}");
        assert!(known.values().all(|p| p.name == "floor"), "{known:?}");
        let err = Floor::attach(&[AttachPoint::Tracepoint {
            category: "syscalls".into(),
            name: "no_such_event".into(),
        }])
        .err()
        .expect("no such tracepoint");
        assert!(format!("{err:#}").contains("no_such_event"), "{err:#}");
    }

    #[test]
    fn attr_layouts_match_the_kernel() {
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, attach_btf_id), 108);
        assert_eq!(size_of::<PerfEventAttr>(), 64);
        assert_eq!(size_of::<RawTracepointAttr>(), 24);
    }
}
