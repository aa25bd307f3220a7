//! Builds the eBPF programs (`session-monitor-ebpf`) for the BPF target with nightly
//! and bpf-linker, into OUT_DIR, where `src/probes/loader.rs` embeds the object.
//! `cargo xtask` installs the toolchain pieces this needs.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|package| package.name.as_str() == "session-monitor-ebpf")
        .ok_or_else(|| anyhow!("session-monitor-ebpf package not found"))?;
    let manifest_path = &ebpf_package.manifest_path;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf_package.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
