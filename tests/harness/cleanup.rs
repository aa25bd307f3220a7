//! Removes what killed test runs left behind: when a test process dies without
//! unwinding (SIGKILL, a timeout), its users, groups, servers and temporary
//! directories stay. All of them carry the test process's pid in their name, so they
//! are recognised once that process is gone.

use std::process::Command;

use crate::{containers, pins, process, tempdir, user};

/// Cleans up after every dead test process. Called once per test process.
pub fn sweep_stale() {
    let dead = |pid: u32| {
        pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    };

    // Servers and daemons of dead runs: their command lines name their directory.
    let stale_dirs: Vec<std::path::PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix(tempdir::PREFIX)
                        .and_then(|rest| rest.split('-').next()?.parse::<u32>().ok())
                        .is_some_and(dead)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    for dir in &stale_dirs {
        let needle = dir.display().to_string();
        let pids: Vec<u32> = process::all()
            .into_iter()
            .filter(|p| process::cmdline(p.pid).is_some_and(|c| c.contains(&needle)))
            .flat_map(|p| {
                let mut tree = process::descendants(p.pid);
                tree.push(p.pid);
                tree
            })
            .collect();
        if !pids.is_empty() {
            eprintln!(
                "cleanup: killing {} processes left by a dead test run in {needle}",
                pids.len()
            );
            process::kill_all(&pids);
        }
        // A killed dockerd's overlay mounts.
        containers::unmount_below(dir);
        let _ = std::fs::remove_dir_all(dir);
    }
    containers::sweep_stale(dead);

    // Kernel state pinned by dead runs' daemons (removing it detaches their programs).
    for dir in pins::stale(dead) {
        eprintln!(
            "cleanup: removing {} left by a dead test run",
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    let stale = |prefix: &str, infix: char, line: &str| -> Option<(String, u32)> {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let pid = name
            .strip_prefix(prefix)?
            .split(infix)
            .next()?
            .parse()
            .ok()?;
        let id = fields.nth(1)?.parse().ok()?;
        dead(pid).then(|| (name.to_string(), id))
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for (name, uid) in passwd
        .lines()
        .filter_map(|l| stale(user::USER_PREFIX, 'u', l))
    {
        eprintln!("cleanup: deleting user {name} left by a dead test run");
        user::kill_user_processes(&name, uid);
        user::delete_user(&name);
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    for (name, _) in groups
        .lines()
        .filter_map(|l| stale(user::GROUP_PREFIX, 'g', l))
    {
        eprintln!("cleanup: deleting group {name} left by a dead test run");
        let _ = process::run(Command::new("groupdel").arg(&name));
    }
}
