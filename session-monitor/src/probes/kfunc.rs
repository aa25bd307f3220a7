//! The eBPF object calls one kfunc, `bpf_rdonly_cast`, through a placeholder
//! instruction: aya 0.14 cannot relocate kfunc calls. Before loading, every
//! placeholder becomes a call to the kfunc's BTF id in the running kernel, or, where
//! the kernel has no such kfunc, `r0 = 0` in a branch the programs never take there
//! (see `session_monitor_common::config::KernelTypes`).

use session_monitor_common::config::kfunc;

/// A copy of the eBPF object with its kfunc calls patched, aligned as the ELF parser
/// needs (8 bytes, like `include_bytes_aligned!`).
pub struct PatchedObject {
    words: Vec<u64>,
    len: usize,
    /// How many calls were patched.
    pub calls: usize,
}

impl PatchedObject {
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

/// Patches `object`'s placeholders with a call to kfunc `rdonly_cast` (its BTF id), or
/// with `r0 = 0` when it is 0. Instructions are 8 bytes and the object's code sections
/// start at multiples of 8, so only aligned slots are compared: a chance match in
/// data that straddles two slots is never touched.
pub fn patch(object: &[u8], rdonly_cast: u32) -> PatchedObject {
    let replacement = if rdonly_cast == 0 {
        kfunc::NO_CALL
    } else {
        kfunc::call(rdonly_cast)
    };
    let mut words = vec![0u64; object.len().div_ceil(8)];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    bytes[..object.len()].copy_from_slice(object);
    let mut calls = 0;
    for slot in bytes.chunks_exact_mut(8) {
        if *slot == kfunc::PLACEHOLDER_CALL {
            slot.copy_from_slice(&replacement);
            calls += 1;
        }
    }
    PatchedObject {
        words,
        len: object.len(),
        calls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::loader::ebpf_object;

    fn count(bytes: &[u8], insn: [u8; 8]) -> usize {
        bytes.chunks_exact(8).filter(|s| *s == insn).count()
    }

    /// The programs hold placeholders, and patching leaves none: every one became a
    /// call to the id given, and nothing else in the object changed.
    #[test]
    fn every_placeholder_becomes_a_call_to_the_kfunc() {
        let object = ebpf_object();
        let placeholders = count(object, kfunc::PLACEHOLDER_CALL);
        assert!(placeholders > 0, "the eBPF object calls bpf_rdonly_cast");
        let patched = patch(object, 12345);
        assert_eq!(patched.calls, placeholders);
        assert_eq!(count(patched.bytes(), kfunc::PLACEHOLDER_CALL), 0);
        assert_eq!(count(patched.bytes(), kfunc::call(12345)), placeholders);
        let changed = object
            .iter()
            .zip(patched.bytes())
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed <= placeholders * 4, "only the immediates changed");
        assert_eq!(patched.bytes().len(), object.len());
    }

    #[test]
    fn without_the_kfunc_each_call_becomes_a_move() {
        let object = ebpf_object();
        let patched = patch(object, 0);
        assert_eq!(count(patched.bytes(), kfunc::PLACEHOLDER_CALL), 0);
        assert!(count(patched.bytes(), kfunc::NO_CALL) >= patched.calls);
        assert!(patched.calls > 0);
    }
}
