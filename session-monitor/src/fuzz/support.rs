//! Shared by the property tests ("fuzzing") of the parsers of untrusted bytes.
//! Included with `#[path]` by each parser's test module, so the daemon's module
//! tree is unchanged.
//!
//! Each target has a seed corpus in `tests-data/fuzz/<target>/`: inputs worth
//! keeping (valid ones, each kind of error, inputs that once broke a parser). Every
//! test run replays all of them, and proptest mutates them (besides generating
//! inputs of its own). A failure proptest finds is saved in `proptest-regressions/`
//! next to the source and replayed first on later runs: commit those files, or add
//! the input to the corpus.
//!
//! `PROPTEST_CASES=100000 cargo test -p session-monitor fuzz_` runs longer.

#![allow(dead_code)] // each target uses part of it

use std::path::PathBuf;

use proptest::{prelude::*, test_runner::Config};

/// The proptest configuration: `default_cases` unless `PROPTEST_CASES` says.
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        ..Config::default()
    }
}

/// The seed corpus of `target`, as (file name, bytes), in name order. Panics if
/// empty: a target without seeds is a mistake, not a pass.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests-data/fuzz")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

/// One edit of a byte string.
#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, u8),
    Remove(usize),
    Replace(usize, u8),
    /// Repeats a stretch (grows nesting and lists).
    Duplicate(usize, usize),
    Truncate(usize),
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match *edit {
        Edit::Insert(i, b) => {
            let i = at(i, bytes.len() + 1);
            bytes.insert(i, b);
        }
        Edit::Remove(i) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes.remove(i);
        }
        Edit::Replace(i, b) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] = b;
        }
        Edit::Duplicate(i, n) if !bytes.is_empty() => {
            let start = at(i, bytes.len());
            let end = (start + 1 + n % 32).min(bytes.len());
            let piece = bytes[start..end].to_vec();
            bytes.splice(start..start, piece);
        }
        Edit::Truncate(i) => {
            let i = at(i, bytes.len() + 1);
            bytes.truncate(i);
        }
        _ => {}
    }
}

/// Bytes the parsers care about, more often than chance would pick them.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(b"{}[]\"\\:,=#\n\r\t 0-9.e+'\0\xff\xc3\xa9".to_vec()),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// A seed of `target`'s corpus with up to 8 random edits.
pub fn mutated(target: &str) -> impl Strategy<Value = Vec<u8>> + use<> {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
    (
        prop::sample::select(seeds),
        prop::collection::vec(edit(), 0..8),
    )
        .prop_map(|(mut bytes, edits)| {
            for e in &edits {
                apply(&mut bytes, e);
            }
            bytes
        })
}
