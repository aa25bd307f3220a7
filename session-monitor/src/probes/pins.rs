//! The kernel side kept alive across daemon restarts: the activity maps and the
//! program links are pinned under bpffs, so that a restarted daemon reads the exact
//! last input of every session (not a terminal access time that moves in 8 s steps),
//! and input typed while no daemon runs is still recorded.
//!
//! Layout: `<root>/<layout>/maps/<MAP>` and `<root>/<layout>/links/<program>`, where
//! `<layout>` fingerprints every pinned map's definition (type, key and value sizes,
//! flags, size), the size of the event ring buffer's records (a ring buffer has no
//! value size, and the old programs may still write into it) and
//! [`MAP_LAYOUT_VERSION`], which is bumped when a value's or record's meaning changes
//! without its size. A daemon whose maps differ starts fresh, removes the
//! incompatible state and says so: reusing a map of another layout would misread it.
//!
//! What a stop leaves behind: a crash or `kill -9` leaves everything pinned, so the
//! old programs keep recording until the next daemon takes over; a clean stop
//! (SIGTERM, SIGINT) removes the links, so that no program runs without a daemon,
//! and keeps the maps, so that the next start still knows the last input.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::programs::links::{FdLink, PinnedLink};
use aya_obj::EbpfSectionKind;
use serde::Serialize;
use session_monitor_common::Event;
use sha2::{Digest as _, Sha256};

/// Bump when a pinned map keeps its sizes but changes what its fields mean.
/// 2: the event record carries what is read (uid, child tgid; no value, no time).
pub const MAP_LAYOUT_VERSION: u32 = 2;

/// The default `--pin-dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/session-monitor";

/// Maps that must start empty with every daemon: the aya-log buffer belongs to the
/// programs of one load.
const NOT_PINNED: &[&str] = &["AYA_LOGS"];

/// One pinnable map of the eBPF object, as the fingerprint sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDefinition {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub flags: u32,
    pub max_entries: u32,
}

/// The maps of `object` worth keeping across restarts: every map but the programs'
/// global variables (`.rodata`, `.data`, `.bss`: each load has its own
/// configuration) and [`NOT_PINNED`]. `max_entries` overrides what the loader resizes.
pub fn pinnable_maps(object: &[u8], max_entries: &[(&str, u32)]) -> Result<Vec<MapDefinition>> {
    let parsed = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let mut maps: Vec<MapDefinition> = parsed
        .maps
        .iter()
        .filter(|(_, map)| {
            matches!(
                map.section_kind(),
                EbpfSectionKind::Maps | EbpfSectionKind::BtfMaps
            )
        })
        .filter(|(name, _)| !NOT_PINNED.contains(&name.as_str()))
        .map(|(name, map)| MapDefinition {
            name: name.clone(),
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            flags: map.map_flags(),
            max_entries: max_entries
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(map.max_entries(), |(_, size)| *size),
        })
        .collect();
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(maps)
}

/// The name of the directory a set of map definitions lives in.
pub fn layout_fingerprint(maps: &[MapDefinition]) -> String {
    let mut hash = Sha256::new();
    hash.update(MAP_LAYOUT_VERSION.to_le_bytes());
    hash.update((Event::SIZE as u32).to_le_bytes());
    for map in maps {
        hash.update(map.name.as_bytes());
        hash.update([0]);
        for n in [
            map.map_type,
            map.key_size,
            map.value_size,
            map.flags,
            map.max_entries,
        ] {
            hash.update(n.to_le_bytes());
        }
    }
    let digest = hash.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("v{MAP_LAYOUT_VERSION}-{hex}")
}

/// What the daemon found under its pin directory at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Found {
    /// Maps of this layout were pinned: their state goes on.
    Reused,
    /// Nothing was pinned (first start, or after a clean removal).
    Fresh,
    /// State of another layout was there and was removed.
    Replaced,
}

impl Found {
    pub fn as_str(self) -> &'static str {
        match self {
            Found::Reused => "reused",
            Found::Fresh => "fresh",
            Found::Replaced => "replaced",
        }
    }
}

/// The pin directory of this daemon's layout.
pub struct PinDir {
    dir: PathBuf,
    pub found: Found,
    /// Links of the programs this daemon attached, pinned once all are attached.
    links: Vec<PinnedLink>,
}

impl PinDir {
    /// Prepares `<root>/<layout>`: removes state of any other layout, creates the
    /// directories, and tells whether this layout's maps are there to be reused.
    pub fn prepare(root: &Path, maps: &[MapDefinition]) -> Result<Self> {
        let layout = layout_fingerprint(maps);
        let dir = root.join(&layout);
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating the pin directory {}", root.display()))?;
        let mut replaced = Vec::new();
        for entry in std::fs::read_dir(root)
            .with_context(|| format!("reading the pin directory {}", root.display()))?
        {
            let entry = entry?;
            if entry.file_name() != layout.as_str() {
                remove_tree(&entry.path())?;
                replaced.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        let reused = maps.iter().any(|m| dir.join("maps").join(&m.name).exists());
        let found = match (reused, replaced.is_empty()) {
            (true, _) => Found::Reused,
            (false, true) => Found::Fresh,
            (false, false) => Found::Replaced,
        };
        match found {
            Found::Reused => tracing::info!(
                dir = %dir.display(),
                "kernel state of the previous daemon reused: activity recorded before and \
                 during the restart counts"
            ),
            Found::Fresh => {
                tracing::info!(dir = %dir.display(), "no kernel state pinned yet; starting fresh")
            }
            Found::Replaced => tracing::warn!(
                dir = %dir.display(),
                "kernel state of another layout ({}) removed; starting fresh: idle times of \
                 sessions already open start from their terminals' access times",
                replaced.join(", ")
            ),
        }
        std::fs::create_dir_all(dir.join("maps"))?;
        std::fs::create_dir_all(dir.join("links"))?;
        Ok(Self {
            dir,
            found,
            links: Vec::new(),
        })
    }

    /// Where map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Pins the links of the programs just attached, in place of the previous
    /// daemon's. The new programs already run, so the old ones are detached (their
    /// pins removed) without a moment in which nothing records; during that moment
    /// both run, which only counts one input twice.
    pub fn pin_links(&mut self, links: Vec<(&'static str, FdLink)>) -> Result<()> {
        remove_entries(&self.dir.join("links"))?;
        for (name, link) in links {
            let pinned = self.pin_link(name, link)?;
            self.links.push(pinned);
        }
        Ok(())
    }

    /// Pins the link of program `name`, for the caller to keep (and unpin); programs
    /// attached on demand pin theirs so (see `super::standby`).
    pub fn pin_link(&self, name: &str, link: FdLink) -> Result<PinnedLink> {
        let path = self.dir.join("links").join(name);
        link.pin(&path)
            .with_context(|| format!("pinning the link of {name} at {}", path.display()))
    }

    /// Whether the programs stay attached when this daemon dies.
    pub fn links_pinned(&self) -> bool {
        !self.links.is_empty()
    }

    /// A clean stop: the programs detach with the daemon (their pins are removed;
    /// the daemon's own link descriptors close when it exits), the maps stay.
    pub fn release_links(&mut self) {
        for link in self.links.drain(..) {
            if let Err(err) = link.unpin() {
                tracing::warn!("removing a pinned link: {err}");
            }
        }
    }
}

/// Removes a pinned tree (bpffs allows unlink and rmdir like any file system).
fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
    }
}

fn remove_entries(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &str, value_size: u32) -> MapDefinition {
        MapDefinition {
            name: name.into(),
            map_type: 1,
            key_size: 8,
            value_size,
            flags: 0,
            max_entries: 1024,
        }
    }

    #[test]
    fn the_fingerprint_follows_every_part_of_a_definition() {
        let base = vec![map("A", 16), map("B", 8)];
        let same = layout_fingerprint(&base);
        assert_eq!(same, layout_fingerprint(&base.clone()));
        assert!(same.starts_with(&format!("v{MAP_LAYOUT_VERSION}-")));
        let mut wider = base.clone();
        wider[0].value_size = 24;
        let mut bigger = base.clone();
        bigger[1].max_entries = 2048;
        let mut renamed = base.clone();
        renamed[1].name = "C".into();
        let mut more = base.clone();
        more.push(map("D", 4));
        for other in [wider, bigger, renamed, more] {
            assert_ne!(same, layout_fingerprint(&other), "{other:?}");
        }
    }

    #[test]
    fn the_real_object_pins_its_activity_maps_and_not_its_globals() {
        let object = super::super::loader::ebpf_object();
        let maps = pinnable_maps(object, &[]).unwrap();
        let names: Vec<&str> = maps.iter().map(|m| m.name.as_str()).collect();
        for wanted in [
            session_monitor_common::map_names::TTY_ACTIVITY,
            session_monitor_common::map_names::PTS_ACTIVITY,
            session_monitor_common::map_names::PROCS,
            session_monitor_common::map_names::REVOKED_UIDS,
            session_monitor_common::map_names::EVENTS,
        ] {
            assert!(names.contains(&wanted), "{wanted} not pinned: {names:?}");
        }
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with('.') && *n != "AYA_LOGS"),
            "{names:?}"
        );
    }

    #[test]
    fn prepare_replaces_other_layouts_and_reuses_its_own() {
        // A plain directory stands in for bpffs: only files and directories matter.
        let root = std::env::temp_dir().join(format!("pins-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let maps = vec![map("A", 16)];
        std::fs::create_dir_all(root.join("v0-old/maps")).unwrap();
        std::fs::write(root.join("v0-old/maps/A"), "").unwrap();

        let first = PinDir::prepare(&root, &maps).unwrap();
        assert_eq!(first.found, Found::Replaced);
        assert!(!root.join("v0-old").exists());
        assert_eq!(PinDir::prepare(&root, &maps).unwrap().found, Found::Fresh);
        std::fs::write(first.map_path("A"), "").unwrap();
        assert_eq!(PinDir::prepare(&root, &maps).unwrap().found, Found::Reused);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
