//! Structure member offsets from the running kernel's BTF.
//!
//! The eBPF programs are compiled once and run on many kernels; the layout of
//! `struct file`, `struct tty_struct` and friends differs between them. Instead of
//! compiling offsets in, the daemon looks every member up here at start-up and hands
//! the result to the programs through their read-only configuration.

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use session_monitor_common::{
    config::KernelTypes,
    kernel_members::{ITER_UNKNOWN, KernelMember, KernelOffsets},
};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Loads the kernel's BTF. Read into memory first: parsed straight from the file,
/// btf-rs asks the file for its position once per type (~30,000 `lseek` calls).
pub fn kernel_btf() -> Result<Btf> {
    let context = || {
        format!("reading kernel BTF from {VMLINUX_BTF} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")
    };
    let bytes = std::fs::read(VMLINUX_BTF).with_context(context)?;
    Btf::from_bytes(&bytes).with_context(context)
}

/// Resolves every line of the kernel contract ([`session_monitor_common::kernel_members`])
/// on this kernel: a missing required member is an error that names it; a missing
/// optional one is 0; an enum value is [`ITER_UNKNOWN`] where the kernel lacks it or
/// the member it describes.
pub fn resolve_offsets(btf: &Btf) -> Result<KernelOffsets> {
    let mut found = [None; KernelOffsets::MEMBERS.len()];
    for (slot, member) in found.iter_mut().zip(KernelOffsets::MEMBERS) {
        *slot = resolve_member(btf, member)?;
    }
    let has = |field: &str| {
        KernelOffsets::MEMBERS
            .iter()
            .zip(&found)
            .any(|(m, offset)| m.field == field && offset.is_some())
    };
    let enum_values = std::array::from_fn(|i| {
        let e = &KernelOffsets::ENUM_VALUES[i];
        if e.needs.is_some_and(|field| !has(field)) {
            return ITER_UNKNOWN;
        }
        enum_value(btf, e.enumeration, e.name).unwrap_or(ITER_UNKNOWN)
    });
    Ok(KernelOffsets::from_table(
        found.map(|offset| offset.unwrap_or(0)),
        enum_values,
    ))
}

/// The offset of the first spelling of `member` this kernel has (newest first); `None`
/// for an optional member it has under no name. The error names the newest spelling.
fn resolve_member(btf: &Btf, member: &KernelMember) -> Result<Option<u32>> {
    let newest = member_offset(btf, member.strukt, member.name());
    let found = member.names[1..].iter().fold(newest, |found, older| {
        found.or_else(|err| member_offset(btf, member.strukt, older).map_err(|_| err))
    });
    match found {
        Ok(offset) => Ok(Some(offset)),
        Err(_) if member.optional => Ok(None),
        Err(err) => Err(err),
    }
}

/// The value of `name` in `enum enumeration`.
pub fn enum_value(btf: &Btf, enumeration: &str, name: &str) -> Option<u32> {
    btf.resolve_types_by_name(enumeration)
        .ok()?
        .iter()
        .find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == name))
                .map(|m| m.val()),
            _ => None,
        })
}

/// Byte offset of `member` in `struct strukt`, searching anonymous members too.
pub fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32> {
    let types = btf
        .resolve_types_by_name(strukt)
        .with_context(|| format!("BTF has no type named `{strukt}`"))?;
    let st = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("BTF has no struct `{strukt}` with members"))?;
    find_member(btf, st, member, 0)?
        .ok_or_else(|| anyhow!("struct `{strukt}` has no member `{member}` in this kernel's BTF"))
}

fn find_member(
    btf: &Btf,
    st: &btf_rs::Struct,
    member: &str,
    base_bits: u32,
) -> Result<Option<u32>> {
    for m in &st.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits + m.bit_offset();
        if name == member {
            if m.bitfield_size().is_some_and(|size| size != 0) || !bits.is_multiple_of(8) {
                bail!("member `{member}` is a bitfield; the probes cannot read it");
            }
            return Ok(Some(bits / 8));
        }
        if name.is_empty() {
            // Anonymous struct or union: look inside.
            let inner = btf.resolve_chained_type(m)?;
            if let Type::Struct(s) | Type::Union(s) = &inner
                && let Some(found) = find_member(btf, s, member, bits)?
            {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// The BTF ids the programs cast with: `bpf_rdonly_cast` and the structures it
/// types. All zero where the kernel has no such kfunc (before 6.2).
pub fn resolve_types(btf: &Btf) -> Result<KernelTypes> {
    let mut types = KernelTypes::default();
    let Some(kfunc) = type_id(btf, "bpf_rdonly_cast", |t| matches!(t, Type::Func(_))) else {
        return Ok(types);
    };
    for (name, field) in KernelTypes::STRUCTS {
        *field(&mut types) = type_id(btf, name, |t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| anyhow!("kernel BTF has no `struct {name}`"))?;
    }
    types.rdonly_cast = kfunc;
    types.void_cast =
        enum_value(btf, "bpf_features", "BPF_FEAT_RDONLY_CAST_TO_VOID").is_some() as u32;
    Ok(types)
}

/// The id of the first type named `name` that `kind` accepts.
fn type_id(btf: &Btf, name: &str, kind: impl Fn(&Type) -> bool) -> Option<u32> {
    btf.resolve_ids_by_name(name)
        .ok()?
        .into_iter()
        .find(|&id| btf.resolve_type_by_id(id).is_ok_and(|t| kind(&t)))
}

/// True when the kernel's BTF has a function named `name` (a trampoline target).
pub fn has_function(btf: &Btf, name: &str) -> bool {
    btf.resolve_types_by_name(name)
        .map(|types| types.iter().any(|t| matches!(t, Type::Func(_))))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the BTF of the machine the tests run on: every member the probes
    /// need must be found, at distinct offsets inside each struct.
    #[test]
    fn resolves_every_offset_on_this_kernel() {
        let btf = kernel_btf().unwrap_or_else(|e| panic!("{e:#}"));
        let offsets = resolve_offsets(&btf).unwrap();
        assert_ne!(offsets.tty_index, offsets.tty_driver_data);
        assert_ne!(offsets.inode_i_mode, offsets.inode_i_rdev);
        // `fd` follows `max_fds` in every kernel since 2.6.
        assert!(offsets.fdtable_fd > offsets.fdtable_max_fds);
        // Since 6.0 write(2) hands tty_write an ITER_UBUF, writev an ITER_IOVEC.
        assert_ne!(offsets.iter_ubuf, ITER_UNKNOWN);
        assert_ne!(offsets.iter_iovec, ITER_UNKNOWN);
        assert_ne!(offsets.iter_ubuf, offsets.iter_iovec);
        assert_ne!(offsets.iov_iter_ubuf, offsets.iov_iter_type);
        assert_ne!(offsets.iov_iter_iov, offsets.iov_iter_type);
    }

    /// A renamed member resolves by whichever spelling the kernel has, newest first;
    /// an optional one the kernel lacks is `None`, a required one an error that
    /// names its newest spelling.
    /// This machine's kernel (6.18) has `bpf_rdonly_cast`: its id and every
    /// structure's are found, and they differ.
    #[test]
    fn resolves_the_cast_kfunc_and_its_types_on_this_kernel() {
        let btf = kernel_btf().unwrap_or_else(|e| panic!("{e:#}"));
        let types = resolve_types(&btf).unwrap_or_else(|e| panic!("{e:#}"));
        let mut ids = vec![types.rdonly_cast];
        for (_, field) in KernelTypes::STRUCTS {
            ids.push(*field(&mut types.clone()));
        }
        assert!(ids.iter().all(|&id| id != 0), "{types:?}");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), KernelTypes::STRUCTS.len() + 1, "{types:?}");
        // 6.17 and later cast to `void`.
        assert_eq!(types.void_cast, 1, "{types:?}");
    }

    #[test]
    fn members_resolve_by_any_spelling() {
        let btf = kernel_btf().unwrap();
        let count = member_offset(&btf, "iov_iter", "count").unwrap();
        let member = |names, optional| KernelMember {
            field: "test",
            strukt: "iov_iter",
            names,
            optional,
        };
        let renamed = member(&["no_such_newest", "count"], false);
        assert_eq!(resolve_member(&btf, &renamed).unwrap(), Some(count));
        let newest_first = member(&["count", "iter_type"], false);
        assert_eq!(resolve_member(&btf, &newest_first).unwrap(), Some(count));
        let absent = member(&["no_such_newest", "no_such_older"], true);
        assert_eq!(resolve_member(&btf, &absent).unwrap(), None);
        let required = member(&["no_such_newest", "no_such_older"], false);
        let err = resolve_member(&btf, &required).unwrap_err().to_string();
        assert!(err.contains("no_such_newest"), "{err}");
    }

    #[test]
    fn unknown_member_is_an_error_that_names_it() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return;
        }
        let btf = kernel_btf().unwrap();
        let err = member_offset(&btf, "tty_struct", "no_such_member").unwrap_err();
        assert!(err.to_string().contains("no_such_member"), "{err}");
    }
}
