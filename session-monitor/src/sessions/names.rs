//! User and group names by id, for sessions' policy matching and display.
//!
//! Start-up discovery and bursts of logins look up the same few ids thousands of
//! times, and each lookup reads and parses `/etc/passwd` or `/etc/group` (or asks NSS).
//! Names are remembered for a few seconds only, so that a rename or a new user shows up
//! in the next sessions soon after.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long a looked-up name is reused.
const FRESH_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Id {
    User(u32),
    Group(u32),
}

static NAMES: Mutex<Option<HashMap<Id, (Instant, String)>>> = Mutex::new(None);

fn cached(id: Id, look_up: impl FnOnce() -> Option<String>) -> String {
    let now = Instant::now();
    {
        let names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, name)) = names.as_ref().and_then(|m| m.get(&id))
            && now.duration_since(*at) < FRESH_FOR
        {
            return name.clone();
        }
    }
    // An id without a name is shown as the number, as `ps` and `w` do.
    let name = look_up().unwrap_or_else(|| match id {
        Id::User(n) | Id::Group(n) => n.to_string(),
    });
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let map = names.get_or_insert_with(HashMap::new);
    map.retain(|_, (at, _)| now.duration_since(*at) < FRESH_FOR);
    map.insert(id, (now, name.clone()));
    name
}

/// The name of user `uid`, or the number when it has none.
pub fn user_name(uid: u32) -> String {
    cached(Id::User(uid), || {
        nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
    })
}

/// The name of group `gid`, or the number when it has none.
pub fn group_name(gid: u32) -> String {
    cached(Id::Group(gid), || {
        nix::unistd::Group::from_gid(gid.into())
            .ok()
            .flatten()
            .map(|g| g.name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_root_and_falls_back_to_the_number() {
        assert_eq!(user_name(0), "root");
        assert_eq!(group_name(0), "root");
        // Twice: the second answer comes from the cache and must agree.
        assert_eq!(user_name(0), "root");
        let unused = 4_000_000_000;
        assert_eq!(user_name(unused), unused.to_string());
        assert_eq!(group_name(unused), unused.to_string());
    }
}
