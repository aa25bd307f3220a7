//! The audit log's file: each record reaches it with one `write()` on an `O_APPEND`
//! descriptor, so a reader never sees half a record from us and a crash leaves at
//! most one torn line at the end, which [`LogFile::open`] cuts off. The file
//! shrinking under us (logrotate's `copytruncate`) is noticed before each write, and
//! [`LogFile::rotate`] renames the set for hosts without logrotate.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// How much of the end of the file is read at open to find the last record.
const TAIL_BYTES: u64 = 1 << 20;

pub struct LogFile {
    path: PathBuf,
    file: File,
    /// The file's size after our last write: less on disk means someone cut it.
    size: u64,
}

/// A torn last line cut off at open.
#[derive(Debug, PartialEq, Eq)]
pub struct Repair {
    pub removed_bytes: u64,
    /// The start of what was removed, as text (for the record of the repair).
    pub removed: String,
}

impl LogFile {
    /// Opens (creating it with mode 0600, its directory with 0700) for appending,
    /// cuts a torn last line off, and returns the last whole line (the record the
    /// chain continues from).
    pub fn open(path: &Path) -> Result<(Self, Option<Repair>, Option<String>)> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating audit log directory {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening audit log {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        let (repair, last, size) =
            repair_tail(&mut file).with_context(|| format!("reading {}", path.display()))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                size,
            },
            repair,
            last,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the file shrank since our last write (copytruncate, or someone cutting
    /// it): returns the size we left and the size now.
    pub fn shrank(&mut self) -> Option<(u64, u64)> {
        let now = self.file.metadata().ok()?.len();
        let before = self.size;
        self.size = now;
        (now < before).then_some((before, now))
    }

    /// Appends `line` (which ends in a newline) with one `write()`. A short write
    /// (the file system filled up) is finished or, failing that, cut off again, so
    /// that the file never keeps part of a record.
    pub fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let written = self.file.write(line)?;
        if written < line.len() {
            // Ask once more for the rest: either it fits now, or we learn why not.
            if let Err(err) = self.file.write_all(&line[written..]) {
                let _ = self.file.set_len(self.size);
                return Err(err);
            }
        }
        self.size += line.len() as u64;
        Ok(())
    }

    /// Replaces the descriptor with a read-only one: every write fails (EBADF).
    #[cfg(test)]
    pub fn break_writes_for_test(&mut self) {
        self.file = File::open(&self.path).unwrap();
    }

    /// Size rotation: `FILE.(keep-1)` → `FILE.keep`, …, `FILE` → `FILE.1`, then a new
    /// empty `FILE`. Returns the name the old file has now.
    pub fn rotate(&mut self, keep: u32) -> Result<PathBuf> {
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        for n in (1..keep.max(1)).rev() {
            match fs::rename(numbered(n), numbered(n + 1)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(err).with_context(|| {
                        format!(
                            "renaming {} to {}",
                            numbered(n).display(),
                            numbered(n + 1).display()
                        )
                    });
                }
                _ => {}
            }
        }
        let first = numbered(1);
        fs::rename(&self.path, &first)
            .with_context(|| format!("renaming {} to {}", self.path.display(), first.display()))?;
        let (fresh, _, _) = Self::open(&self.path)?;
        *self = fresh;
        Ok(first)
    }
}

/// The last whole line of the file before `path` in a rotated set (`FILE.1`), to
/// continue the chain when `FILE` starts empty.
pub fn last_line_of_previous(path: &Path) -> Option<String> {
    let mut name = path.to_path_buf().into_os_string();
    name.push(".1");
    let mut file = File::open(PathBuf::from(name)).ok()?;
    let len = file.metadata().ok()?.len();
    let tail = read_tail(&mut file, len).ok()?;
    let whole = match tail.iter().rposition(|&b| b == b'\n') {
        Some(end) => &tail[..end],
        None => return None,
    };
    last_line(whole)
}

/// Cuts everything after the last newline; returns what was cut, the last whole
/// line and the new size.
fn repair_tail(file: &mut File) -> io::Result<(Option<Repair>, Option<String>, u64)> {
    let len = file.metadata()?.len();
    let tail = read_tail(file, len)?;
    let start = len - tail.len() as u64;
    let (repair, whole, size) = match tail.iter().rposition(|&b| b == b'\n') {
        _ if tail.is_empty() => (None, &tail[..], len),
        Some(end) if end + 1 == tail.len() => (None, &tail[..end], len),
        found => {
            // Torn: no newline at the end (a write cut short by a crash or a full disk).
            let keep = found.map_or(0, |end| end + 1);
            let removed = &tail[keep..];
            let repair = Repair {
                removed_bytes: removed.len() as u64,
                removed: String::from_utf8_lossy(&removed[..removed.len().min(200)]).into_owned(),
            };
            let size = start + keep as u64;
            file.set_len(size)?;
            (Some(repair), &tail[..keep.saturating_sub(1)], size)
        }
    };
    file.seek(SeekFrom::End(0))?;
    Ok((repair, last_line(whole), size))
}

fn read_tail(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    file.take(len - start).read_to_end(&mut tail)?;
    Ok(tail)
}

/// The last non-empty line of `text` (which has no trailing newline).
fn last_line(text: &[u8]) -> Option<String> {
    text.split(|&b| b == b'\n')
        .rev()
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| String::from_utf8_lossy(l).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sm-file-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn torn_last_line_is_cut_at_open() {
        let dir = tempdir("torn");
        let path = dir.join("a.jsonl");
        fs::write(&path, "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3,\"ev").unwrap();
        let (mut file, repair, last) = LogFile::open(&path).unwrap();
        assert_eq!(
            repair,
            Some(Repair {
                removed_bytes: 12,
                removed: "{\"seq\":3,\"ev".into()
            })
        );
        assert_eq!(last.as_deref(), Some("{\"seq\":2}"));
        file.append(b"{\"seq\":3}\n").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}\n"
        );
        // A file that is one torn line becomes empty.
        fs::write(&path, "{\"se").unwrap();
        let (_, repair, last) = LogFile::open(&path).unwrap();
        assert_eq!(repair.unwrap().removed_bytes, 4);
        assert_eq!((last, fs::metadata(&path).unwrap().len()), (None, 0));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn intact_file_is_left_alone_and_shrinking_is_noticed() {
        let dir = tempdir("shrink");
        let path = dir.join("a.jsonl");
        fs::write(&path, "one\ntwo\n").unwrap();
        let (mut file, repair, last) = LogFile::open(&path).unwrap();
        assert_eq!((repair, last.as_deref()), (None, Some("two")));
        assert_eq!(file.shrank(), None);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(file.shrank(), Some((8, 0)));
        assert_eq!(file.shrank(), None);
        file.append(b"three\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "three\n");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotation_shifts_the_numbered_files_and_keeps_at_most_keep() {
        let dir = tempdir("rotate");
        let path = dir.join("a.jsonl");
        let (mut file, _, _) = LogFile::open(&path).unwrap();
        for i in 0..4 {
            file.append(format!("{i}\n").as_bytes()).unwrap();
            assert_eq!(file.rotate(2).unwrap(), dir.join("a.jsonl.1"));
        }
        file.append(b"4\n").unwrap();
        let read = |n: &str| fs::read_to_string(dir.join(n)).unwrap();
        assert_eq!(
            (read("a.jsonl"), read("a.jsonl.1"), read("a.jsonl.2")),
            ("4\n".into(), "3\n".into(), "2\n".into())
        );
        assert!(!dir.join("a.jsonl.3").exists());
        assert_eq!(last_line_of_previous(&path).as_deref(), Some("3"));
        fs::remove_dir_all(dir).unwrap();
    }
}
