//! The structure member offsets the daemon resolved from the running kernel's BTF
//! (`status --json` `offsets`, e.g. `"tty_struct.index": 32`) are the ones an
//! independent tool reads from the same BTF: `bpftool btf dump ... format raw`, parsed
//! here (byte offset = bits_offset / 8 of the named member, looking into anonymous
//! structs and unions). The probes read kernel memory at these offsets; a wrong one
//! makes them read garbage on some kernel, which `cargo xtask vm-test` runs this on.

use std::{collections::HashMap, process::Command, time::Duration};

use harness::{Daemon, process, test_guard};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// One type of a raw BTF dump: its kind, name, the type it refers to (modifiers and
/// typedefs) and, for structs and unions, its members.
#[derive(Debug, Default)]
struct BtfType {
    kind: String,
    name: String,
    type_id: Option<u32>,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    name: String,
    type_id: u32,
    bits_offset: u64,
    bitfield: bool,
}

/// `key=value` from the words of a raw dump line.
fn field<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Parses `bpftool btf dump file FILE format raw`:
///
/// ```text
/// [1083] STRUCT 'tty_struct' size=720 vlen=38
///         'kref' type_id=308 bits_offset=0
///         '(anon)' type_id=866 bits_offset=128
/// [5] CONST '(anon)' type_id=4
/// ```
fn parse_raw_dump(dump: &str) -> HashMap<u32, BtfType> {
    let mut types: HashMap<u32, BtfType> = HashMap::new();
    let mut current: Option<u32> = None;
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            let Some((id, rest)) = rest.split_once("] ") else {
                continue;
            };
            let Ok(id) = id.parse::<u32>() else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            let kind = words.first().copied().unwrap_or_default().to_string();
            let name = rest
                .split('\'')
                .nth(1)
                .filter(|n| *n != "(anon)")
                .unwrap_or_default()
                .to_string();
            let type_id = field(&words, "type_id").and_then(|v| v.parse().ok());
            types.insert(
                id,
                BtfType {
                    kind,
                    name,
                    type_id,
                    members: Vec::new(),
                },
            );
            current = Some(id);
        } else if line.starts_with('\t') || line.starts_with(' ') {
            // A member (or an enum value, a function parameter: only members have
            // bits_offset).
            let words: Vec<&str> = line.split_whitespace().collect();
            let (Some(id), Some(type_id), Some(bits)) = (
                current,
                field(&words, "type_id").and_then(|v| v.parse().ok()),
                field(&words, "bits_offset").and_then(|v| v.parse().ok()),
            ) else {
                continue;
            };
            let name = line
                .split('\'')
                .nth(1)
                .filter(|n| *n != "(anon)")
                .unwrap_or_default()
                .to_string();
            let bitfield = field(&words, "bitfield_size").is_some_and(|s| s != "0");
            if let Some(t) = types.get_mut(&id) {
                t.members.push(Member {
                    name,
                    type_id,
                    bits_offset: bits,
                    bitfield,
                });
            }
        }
    }
    types
}

/// Follows typedefs and modifiers to the struct or union an anonymous member is.
fn resolve(types: &HashMap<u32, BtfType>, mut id: u32) -> Option<&BtfType> {
    for _ in 0..16 {
        let t = types.get(&id)?;
        match t.kind.as_str() {
            "STRUCT" | "UNION" => return Some(t),
            "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => id = t.type_id?,
            _ => return None,
        }
    }
    None
}

/// Bit offset of `member` in `st`, looking into anonymous members in order.
fn find_member(types: &HashMap<u32, BtfType>, st: &BtfType, member: &str) -> Option<(u64, bool)> {
    for m in &st.members {
        if m.name == member {
            return Some((m.bits_offset, m.bitfield));
        }
        if m.name.is_empty()
            && let Some(inner) = resolve(types, m.type_id)
            && let Some((bits, bitfield)) = find_member(types, inner, member)
        {
            return Some((m.bits_offset + bits, bitfield));
        }
    }
    None
}

#[test]
fn offsets_match_bpftool_reading_of_kernel_btf() {
    let _guard = test_guard!();
    let bpftool = ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("bpftool not found; `cargo xtask setup --for test` installs it");

    let daemon = Daemon::builder()
        .start_timeout(Duration::from_secs(90))
        .start();
    let status = daemon.status();
    let offsets = status["offsets"]
        .as_object()
        .unwrap_or_else(|| panic!("status has no offsets: {status:#}"));
    drop(daemon);
    assert!(
        offsets.len() >= 20,
        "expected every member the probes read, got {offsets:?}"
    );

    let dump = process::run_ok(Command::new(bpftool).args([
        "btf",
        "dump",
        "file",
        VMLINUX_BTF,
        "format",
        "raw",
    ]));
    let types = parse_raw_dump(&dump);
    assert!(
        types.len() > 1000,
        "bpftool's dump of {VMLINUX_BTF} parsed to {} types",
        types.len()
    );

    let mut checked = Vec::new();
    for (key, value) in offsets {
        let (strukt, member) = key
            .split_once('.')
            .unwrap_or_else(|| panic!("offset key {key:?} is not struct.member"));
        let daemon_offset = value
            .as_u64()
            .unwrap_or_else(|| panic!("offset {key} = {value} is not a number"));
        // Every complete definition of the struct (vmlinux has one, but be sure).
        // A member renamed between kernels goes by its newest name in `status`: the
        // daemon resolves whichever this kernel has.
        let spellings: &[&str] = match (strukt, member) {
            ("iov_iter", "__iov") => &["__iov", "iov"],
            _ => std::slice::from_ref(&member),
        };
        let candidates: Vec<(u64, bool)> = types
            .values()
            .filter(|t| t.kind == "STRUCT" && t.name == strukt && !t.members.is_empty())
            .flat_map(|t| {
                spellings
                    .iter()
                    .filter_map(|m| find_member(&types, t, m))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            !candidates.is_empty(),
            "bpftool finds no member {member} in struct {strukt} (the daemon says {daemon_offset})"
        );
        for &(bits, bitfield) in &candidates {
            assert!(!bitfield, "{key} is a bitfield in this kernel");
            assert_eq!(bits % 8, 0, "{key} is not byte-aligned ({bits} bits)");
        }
        assert!(
            candidates
                .iter()
                .any(|&(bits, _)| bits / 8 == daemon_offset),
            "{key}: the daemon resolved {daemon_offset}, bpftool says {:?} (bytes)",
            candidates.iter().map(|(b, _)| b / 8).collect::<Vec<_>>()
        );
        checked.push(format!("{key}={daemon_offset}"));
    }
    checked.sort();
    eprintln!(
        "{} offsets agree with bpftool on {}: {}",
        checked.len(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        checked.join(" ")
    );
}

#[test]
fn raw_dump_parser_descends_into_anonymous_members() {
    let dump = "\
[1] INT 'int' size=4 bits_offset=0 nr_bits=32 encoding=SIGNED
[2] STRUCT '(anon)' size=16 vlen=2
\t'a' type_id=1 bits_offset=0
\t'count' type_id=1 bits_offset=64
[3] CONST '(anon)' type_id=2
[4] STRUCT 'outer' size=40 vlen=3
\t'flags' type_id=1 bits_offset=0 bitfield_size=3
\t'(anon)' type_id=3 bits_offset=128
\t'tail' type_id=1 bits_offset=256
";
    let types = parse_raw_dump(dump);
    let outer = &types[&4];
    // Through the anonymous struct (behind a CONST): 128 + 64.
    assert_eq!(find_member(&types, outer, "count"), Some((192, false)));
    assert_eq!(find_member(&types, outer, "tail"), Some((256, false)));
    assert_eq!(find_member(&types, outer, "a"), Some((128, false)));
    assert_eq!(find_member(&types, outer, "flags"), Some((0, true)));
    assert_eq!(find_member(&types, outer, "missing"), None);
}
