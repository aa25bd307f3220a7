//! Tracepoint record layouts, read from tracefs `format` files, and tracefs itself.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use session_monitor_common::config::{KernelOffsets, TracepointFields};

const TRACEFS_DEFAULT: &str = "/sys/kernel/tracing";

/// Where tracefs is mounted; mounts it at the standard place when it is not.
pub fn ensure_tracefs() -> Result<PathBuf> {
    if let Some(path) = mounted_tracefs()? {
        return Ok(path);
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS_DEFAULT,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!("tracefs is not mounted and mounting it at {TRACEFS_DEFAULT} failed")
    })?;
    tracing::info!(path = TRACEFS_DEFAULT, "mounted tracefs");
    Ok(PathBuf::from(TRACEFS_DEFAULT))
}

fn mounted_tracefs() -> Result<Option<PathBuf>> {
    let mounts = procfs::mounts().context("reading /proc/mounts")?;
    Ok(mounts
        .into_iter()
        .find(|m| m.fs_vfstype == "tracefs")
        .map(|m| PathBuf::from(m.fs_file)))
}

/// The tracefs directory of one event.
pub fn event_dir(tracefs: &Path, category: &str, name: &str) -> PathBuf {
    tracefs.join("events").join(category).join(name)
}

pub fn has_event(tracefs: &Path, category: &str, name: &str) -> bool {
    event_dir(tracefs, category, name).join("format").exists()
}

/// Offset of `field` in the record of `category/name`.
pub fn field_offset(tracefs: &Path, category: &str, name: &str, field: &str) -> Result<u32> {
    let path = event_dir(tracefs, category, name).join("format");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "tracepoint {category}:{name} is not available ({})",
            path.display()
        )
    })?;
    parse_field_offset(&text, field).with_context(|| format!("in {}", path.display()))
}

/// Parses lines like `field:unsigned int fd;<TAB>offset:16;<TAB>size:8;<TAB>signed:0;`.
pub fn parse_field_offset(format: &str, field: &str) -> Result<u32> {
    for line in format.lines() {
        let line = line.trim();
        let Some(decl) = line.strip_prefix("field:") else {
            continue;
        };
        let Some((decl, rest)) = decl.split_once(';') else {
            continue;
        };
        // The declaration's last word is the field name, possibly with `[N]` or `*`.
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("")
            .split('[')
            .next()
            .unwrap_or("");
        if name != field {
            continue;
        }
        let offset = rest
            .split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))
            .ok_or_else(|| anyhow!("field `{field}` has no offset"))?;
        return offset
            .trim()
            .parse()
            .with_context(|| format!("bad offset `{offset}` for field `{field}`"));
    }
    bail!("no field `{field}` in tracepoint format")
}

/// Which tracepoint gives the UDP receive signal on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpSource {
    /// `sock_recv_length` (Linux 6.3+) as a BTF tracepoint: the socket comes typed,
    /// and no perf record is filled for the receives of other protocols.
    SockRecvLength,
    /// Before 6.3: `syscalls:sys_exit_recvmsg` and `sys_exit_recvfrom` of processes
    /// tracked for UDP liveness (Mosh servers, whose only sockets are their UDP ones).
    /// Not `skb:skb_copy_datagram_iovec`: UDP copies linear datagrams (all small ones)
    /// with `copy_linear_skb`, which never reaches that tracepoint.
    RecvSyscalls,
}

impl UdpSource {
    /// Where the signal comes from, as `status` shows it.
    pub fn describe(self) -> &'static str {
        match self {
            UdpSource::SockRecvLength => "tp_btf/sock_recv_length",
            UdpSource::RecvSyscalls => {
                "tracepoint/syscalls/sys_exit_recvmsg and sys_exit_recvfrom (Mosh servers only)"
            }
        }
    }
}

/// The UDP source this kernel allows, and why `sock_recv_length` was passed over
/// where the kernel has it.
pub fn udp_source(tracefs: &Path, offsets: &KernelOffsets) -> (UdpSource, Option<&'static str>) {
    choose_udp_source(
        has_event(tracefs, "sock", "sock_recv_length"),
        offsets.sock_sk_protocol,
    )
}

/// `sock_recv_length` fires for every socket receive on the host, so its program
/// reads the socket's protocol first; without `sock.sk_protocol` (an optional line of
/// the kernel table, 0 when BTF lacks it: it is never the first member) it cannot,
/// and the receive exits of the tracked processes are used instead, as on kernels
/// without the event.
fn choose_udp_source(
    has_sock_recv_length: bool,
    sock_sk_protocol: u32,
) -> (UdpSource, Option<&'static str>) {
    match (has_sock_recv_length, sock_sk_protocol) {
        (false, _) => (UdpSource::RecvSyscalls, None),
        (true, 0) => (
            UdpSource::RecvSyscalls,
            Some(
                "the kernel has sock:sock_recv_length but its BTF has no member \
                 sock.sk_protocol, which tp_btf/sock_recv_length reads to keep only UDP: \
                 using the exits of recvmsg and recvfrom (Mosh servers only)",
            ),
        ),
        (true, _) => (UdpSource::SockRecvLength, None),
    }
}

/// Resolves every tracepoint field the tracepoint backend reads.
pub fn resolve_fields(tracefs: &Path, udp: UdpSource) -> Result<TracepointFields> {
    let sc = |name: &str, field: &str| field_offset(tracefs, "syscalls", name, field);
    let fd = sc("sys_enter_write", "fd")?;
    for other in ["sys_enter_writev", "sys_enter_ioctl"] {
        let theirs = sc(other, "fd")?;
        if theirs != fd {
            bail!("syscalls:{other} has `fd` at offset {theirs}, sys_enter_write at {fd}");
        }
    }
    let fields = TracepointFields {
        sys_enter_fd: fd,
        sys_enter_write_count: sc("sys_enter_write", "count")?,
        sys_enter_write_buf: sc("sys_enter_write", "buf")?,
        sys_enter_writev_vec: sc("sys_enter_writev", "vec")?,
        sys_enter_writev_vlen: sc("sys_enter_writev", "vlen")?,
        sys_enter_ioctl_cmd: sc("sys_enter_ioctl", "cmd")?,
        sys_exit_ret: sc("sys_exit_read", "ret")?,
    };
    if udp == UdpSource::RecvSyscalls {
        // Read through `sys_exit_ret`, like sys_exit_read.
        for other in ["sys_exit_recvmsg", "sys_exit_recvfrom"] {
            let theirs = sc(other, "ret")?;
            if theirs != fields.sys_exit_ret {
                bail!(
                    "syscalls:{other} has `ret` at offset {theirs}, sys_exit_read at {}",
                    fields.sys_exit_ret
                );
            }
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sock_recv_length_only_with_the_socket_protocol() {
        assert_eq!(
            choose_udp_source(true, 472),
            (UdpSource::SockRecvLength, None)
        );
        let (source, why) = choose_udp_source(true, 0);
        assert_eq!(source, UdpSource::RecvSyscalls);
        assert!(
            why.is_some_and(|w| w.contains("sock.sk_protocol")),
            "{why:?}"
        );
        assert_eq!(choose_udp_source(false, 0), (UdpSource::RecvSyscalls, None));
        assert_eq!(
            choose_udp_source(false, 472),
            (UdpSource::RecvSyscalls, None)
        );
    }

    const WRITE_FORMAT: &str = "name: sys_enter_write
ID: 840
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * buf;\toffset:24;\tsize:8;\tsigned:0;
\tfield:size_t count;\toffset:32;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:40;\tsize:16;\tsigned:0;
";

    #[test]
    fn parses_field_offsets() {
        assert_eq!(parse_field_offset(WRITE_FORMAT, "fd").unwrap(), 16);
        assert_eq!(parse_field_offset(WRITE_FORMAT, "buf").unwrap(), 24);
        assert_eq!(parse_field_offset(WRITE_FORMAT, "count").unwrap(), 32);
        assert_eq!(parse_field_offset(WRITE_FORMAT, "comm").unwrap(), 40);
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_field_offset(WRITE_FORMAT, "flags").unwrap_err();
        assert!(err.to_string().contains("flags"));
    }
}
