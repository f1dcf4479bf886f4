//! Which uid and gid each plugin runs as: a configured account, explicit
//! ids, or by default a dedicated id of its own from the dynamic range, so
//! that no two plugins share an identity (and cannot signal or read each
//! other) and none is ever root.

use std::collections::{BTreeSet, HashMap};

use super::Config;
use super::load::{Problems, Seg};

/// FNV-1a: a stable hash, so a plugin keeps its uid across restarts and
/// versions of the supervisor.
fn stable_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `(uid_t)-1`: `setresuid` and `setresgid` read it as "leave this id as it is", so a
/// plugin given it would keep the supervisor's root.
const UNCHANGED: u32 = u32::MAX;

/// (uid, gid) per plugin name; problems are recorded with the key at fault.
pub(super) fn assign(config: &Config, p: &mut Problems<'_>) -> HashMap<String, (u32, u32)> {
    let [lo, hi] = config.supervisor.sandbox.uid_range;
    let range_at = [Seg::Key("supervisor"), Seg::Key("sandbox"), Seg::Key("uid_range")];
    if lo == 0 || lo > hi || hi == UNCHANGED {
        p.at(&range_at, format!("uid_range [{lo}, {hi}] must be a non-empty range above 0 and below {UNCHANGED}"));
        return HashMap::new();
    }
    let mut out = HashMap::new();
    let mut taken = BTreeSet::new();
    // Explicit identities first, so dynamic ones avoid them.
    for (i, plugin) in config.plugins.iter().enumerate() {
        let at = |key: &'static str| [Seg::Key("plugin"), Seg::Index(i), Seg::Key(key)];
        let ids = match (&plugin.user, plugin.uid) {
            (Some(_), Some(_)) => {
                p.at(&at("uid"), "give either `user` or `uid`, not both");
                continue;
            }
            (Some(user), None) => match nix::unistd::User::from_name(user) {
                Ok(Some(u)) => (u.uid.as_raw(), plugin.gid.unwrap_or(u.gid.as_raw())),
                Ok(None) => {
                    p.at(&at("user"), format!("no such user {user:?}"));
                    continue;
                }
                Err(e) => {
                    p.at(&at("user"), format!("looking up user {user:?}: {e}"));
                    continue;
                }
            },
            (None, Some(uid)) => (uid, plugin.gid.unwrap_or(uid)),
            (None, None) => {
                // Taken as given, it would have been dropped without a word: the plugin
                // runs as a uid of its own from uid_range, with that uid as its gid.
                if plugin.gid.is_some() {
                    p.at(
                        &at("gid"),
                        "`gid` needs `user` or `uid` beside it: without them the plugin runs as a uid of its \
                         own from `uid_range`, and that uid is its gid",
                    );
                }
                continue;
            }
        };
        if ids.0 == 0 || ids.1 == 0 {
            p.at(&at(if plugin.user.is_some() { "user" } else { "uid" }), "plugins never run as root (uid or gid 0)");
            continue;
        }
        if ids.0 == UNCHANGED || ids.1 == UNCHANGED {
            let key = if ids.0 != UNCHANGED && plugin.gid.is_some() {
                "gid"
            } else if plugin.user.is_some() {
                "user"
            } else {
                "uid"
            };
            p.at(
                &at(key),
                format!("id {UNCHANGED} is (uid_t)-1, which the kernel reads as \"keep the current id\": the plugin would run as root"),
            );
            continue;
        }
        taken.insert(ids.0);
        out.insert(plugin.name.clone(), ids);
    }
    let size = u64::from(hi - lo) + 1;
    let mut dynamic: Vec<&str> =
        config.plugins.iter().filter(|pl| pl.user.is_none() && pl.uid.is_none()).map(|pl| pl.name.as_str()).collect();
    dynamic.sort_unstable();
    dynamic.dedup();
    // Only explicit ids inside the range take places from it: a host account's uid (1000,
    // say) leaves every one of them free.
    let free = size - taken.range(lo..=hi).count() as u64;
    if dynamic.len() as u64 > free {
        p.at(&range_at, format!("uid_range [{lo}, {hi}] is too small for {} plugins", dynamic.len()));
        return out;
    }
    for name in dynamic {
        // Probe from the name's slot; in sorted name order, so the result
        // does not depend on the order of entries in the file.
        let start = stable_hash(name) % size;
        let uid = (0..size).map(|k| lo + ((start + k) % size) as u32).find(|u| !taken.contains(u)).unwrap_or(lo);
        taken.insert(uid);
        out.insert(name.to_owned(), (uid, uid));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::load;

    fn ids(text: &str) -> Vec<(String, (u32, u32))> {
        let c = load::parse(text, Path::new("/etc/t.toml")).unwrap();
        let mut v: Vec<_> = c.specs().into_iter().map(|s| (s.name, s.ids)).collect();
        v.sort();
        v
    }

    const TRUE: &str = "binary = \"/bin/true\"\ntier = \"none\"\n";
    const ALLOW: &str = "[supervisor.sandbox]\nallow_unsandboxed = true\n";

    #[test]
    fn each_plugin_gets_its_own_stable_id_in_the_range() {
        let text = format!("{ALLOW}[[plugin]]\nname = \"a\"\n{TRUE}[[plugin]]\nname = \"b\"\n{TRUE}");
        let got = ids(&text);
        assert_ne!(got[0].1, got[1].1);
        for (_, (uid, gid)) in &got {
            assert!((61184..=65519).contains(uid));
            assert_eq!(uid, gid);
        }
        // Reordering the entries changes nothing.
        let swapped = format!("{ALLOW}[[plugin]]\nname = \"b\"\n{TRUE}[[plugin]]\nname = \"a\"\n{TRUE}");
        assert_eq!(ids(&swapped), got);
    }

    #[test]
    fn a_tiny_range_still_gives_distinct_ids_and_then_refuses() {
        let range = "[supervisor.sandbox]\nallow_unsandboxed = true\nuid_range = [70000, 70001]\n";
        let two = format!("{range}[[plugin]]\nname = \"a\"\n{TRUE}[[plugin]]\nname = \"b\"\n{TRUE}");
        let got = ids(&two);
        assert_ne!(got[0].1.0, got[1].1.0);
        let three = format!("{two}[[plugin]]\nname = \"c\"\n{TRUE}");
        let err = load::parse(&three, Path::new("/etc/t.toml")).unwrap_err().to_string();
        assert!(err.contains("too small for 3 plugins"), "{err}");
    }

    /// The range's size less every explicit uid was taken as its free places, so a
    /// plugin running as uid 1000 took one of [70000, 70001] away.
    #[test]
    fn only_explicit_uids_inside_the_range_take_places_from_it() {
        let range = "[supervisor.sandbox]\nallow_unsandboxed = true\nuid_range = [70000, 70001]\n";
        let two = format!("{range}[[plugin]]\nname = \"a\"\n{TRUE}[[plugin]]\nname = \"b\"\n{TRUE}");
        let host = format!("{two}[[plugin]]\nname = \"h\"\n{TRUE}uid = 1000\n");
        let got = ids(&host);
        assert_eq!(got[2], ("h".to_owned(), (1000, 1000)));
        let mut dynamic = [got[0].1, got[1].1];
        dynamic.sort();
        assert_eq!(dynamic, [(70000, 70000), (70001, 70001)]);
        let problems = |text: &str| {
            let err = load::parse(text, Path::new("/etc/t.toml")).unwrap_err();
            err.problems().iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>()
        };
        let three = format!("{host}[[plugin]]\nname = \"c\"\n{TRUE}");
        assert_eq!(
            problems(&three),
            ["supervisor.sandbox.uid_range: uid_range [70000, 70001] is too small for 3 plugins"]
        );
        let inside = format!("{two}[[plugin]]\nname = \"h\"\n{TRUE}uid = 70001\n");
        assert_eq!(
            problems(&inside),
            ["supervisor.sandbox.uid_range: uid_range [70000, 70001] is too small for 2 plugins"]
        );
    }

    #[test]
    fn root_is_refused_and_accounts_resolve() {
        let root = format!("{ALLOW}[[plugin]]\nname = \"a\"\n{TRUE}uid = 0\n");
        let err = load::parse(&root, Path::new("/etc/t.toml")).unwrap_err().to_string();
        assert!(err.contains("plugin[0].uid: plugins never run as root"), "{err}");
        let nobody = format!("{ALLOW}[[plugin]]\nname = \"a\"\n{TRUE}user = \"nobody\"\n");
        assert_eq!(ids(&nobody)[0].1.0, 65534);
        let ghost = format!("{ALLOW}[[plugin]]\nname = \"a\"\n{TRUE}user = \"no-such-user-x\"\n");
        assert!(load::parse(&ghost, Path::new("/etc/t.toml")).unwrap_err().to_string().contains("no such user"));
    }

    #[test]
    fn a_gid_without_a_user_or_uid_is_refused_not_dropped() {
        let text = format!("{ALLOW}[[plugin]]\nname = \"a\"\n{TRUE}gid = 100\n");
        let err = load::parse(&text, Path::new("/etc/t.toml")).unwrap_err().to_string();
        assert!(err.contains("/etc/t.toml:7: plugin[0].gid: `gid` needs `user` or `uid` beside it"), "{err}");
        let with_uid = format!("{ALLOW}[[plugin]]\nname = \"a\"\n{TRUE}uid = 1234\ngid = 100\n");
        assert_eq!(ids(&with_uid)[0].1, (1234, 100));
    }

    /// 4294967295 is `(uid_t)-1`: setresuid(-1, -1, -1) changes nothing, and the plugin
    /// would have run as root.
    #[test]
    fn the_id_the_kernel_reads_as_unchanged_is_refused_wherever_an_id_is_given() {
        let refused = |extra: &str, key: &str| {
            let text = format!("{ALLOW}[[plugin]]\nname = \"a\"\n{TRUE}{extra}");
            let err = load::parse(&text, Path::new("/etc/t.toml")).unwrap_err().to_string();
            assert!(err.contains(&format!("{key}: id 4294967295 is (uid_t)-1")), "{extra}: {err}");
        };
        refused("uid = 4294967295\n", "plugin[0].uid");
        refused("uid = 1000\ngid = 4294967295\n", "plugin[0].gid");
        refused("uid = 4294967295\ngid = 1000\n", "plugin[0].uid");
        refused("user = \"nobody\"\ngid = 4294967295\n", "plugin[0].gid");
        let range = "[supervisor.sandbox]\nallow_unsandboxed = true\nuid_range = [4294967295, 4294967295]\n";
        let err = load::parse(&format!("{range}[[plugin]]\nname = \"a\"\n{TRUE}"), Path::new("/etc/t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("supervisor.sandbox.uid_range: uid_range [4294967295, 4294967295] must be"), "{err}");
        // The range may reach just below it.
        let top = "[supervisor.sandbox]\nallow_unsandboxed = true\nuid_range = [4294967294, 4294967294]\n";
        assert_eq!(ids(&format!("{top}[[plugin]]\nname = \"a\"\n{TRUE}"))[0].1, (4294967294, 4294967294));
    }
}
