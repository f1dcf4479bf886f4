//! Who may call a plugin through `gateway.sock`: the caller's identity as
//! the kernel vouches for it (captured once per connection), a plugin's
//! `callers` rules as the config states them (users and groups resolved to
//! numbers at load, plugins kept by name and known at call time), and the
//! match between the two.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

/// The process at the other end of a gateway connection, as the kernel
/// saw it when it connected (`SO_PEERCRED`, `SO_PEERGROUPS`): what it
/// does after that (a setuid, a changed group list) does not change what
/// its calls may reach. Put into every request's `http::Extensions`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups, sorted.
    pub groups: Arc<[u32]>,
    /// Its `/proc/PID/cgroup` when it connected, for `plugin:` rules; None when it could
    /// not be read, or not for sure of the process that connected.
    cgroups: Option<Arc<str>>,
    /// The plugin it is, when the supervisor knows without asking the kernel: the
    /// other end of the host connection it gave that plugin's instance.
    plugin: Option<Arc<str>>,
}

impl Peer {
    /// Reads the peer credentials of a connected unix socket.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        let mut groups = groups_or_unknown(peer_groups(stream))?;
        groups.sort_unstable();
        groups.dedup();
        let cgroups = cred.pid().and_then(|pid| peer_cgroups(stream, pid));
        Ok(Self { uid: cred.uid(), gid: cred.gid(), pid: cred.pid(), groups: groups.into(), cgroups, plugin: None })
    }

    /// A peer as given (tests, and callers that are no socket): in no cgroup known.
    pub fn new(uid: u32, gid: u32, pid: Option<i32>, groups: &[u32]) -> Self {
        Self { uid, gid, pid, groups: groups.into(), cgroups: None, plugin: None }
    }

    /// An instance of `plugin` calling through its host connection, which the supervisor
    /// gave it: its identity needs no kernel's word (and a socketpair's peer credentials
    /// would name the supervisor, which made the pair).
    pub fn plugin_instance(plugin: &str, uid: u32, gid: u32) -> Self {
        Self { plugin: Some(plugin.into()), ..Self::new(uid, gid, None, &[]) }
    }

    /// The plugin it is known to be an instance of, by the connection it came on.
    pub fn known_plugin(&self) -> Option<&str> {
        self.plugin.as_deref()
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.binary_search(&gid).is_ok()
    }

    /// The connecting process's `/proc/PID/cgroup`, as read when it connected.
    pub fn cgroups(&self) -> Option<&str> {
        self.cgroups.as_deref()
    }
}

/// `/proc/PID/cgroup` of the process that connected. The pid is pinned by the pidfd the
/// kernel gives for the connection's peer (`SO_PEERPIDFD`, 6.5+; closed at once, as a
/// connection may cost one descriptor only): read while that process still lives, the
/// text is its own, not a later holder's of the same pid. Without one (older kernels)
/// the pid is trusted.
fn peer_cgroups(stream: &impl AsFd, pid: i32) -> Option<Arc<str>> {
    let pidfd = peer_pidfd(stream);
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    match &pidfd {
        Some(fd) if !alive(fd) => None,
        _ => Some(text.into()),
    }
}

/// Linux's `SO_PEERPIDFD` (since 6.5): libc names it only in its new uapi tree, not
/// for this target yet, so this is the thin layer. 77 everywhere but sparc.
#[cfg(not(target_arch = "sparc64"))]
const SO_PEERPIDFD: libc::c_int = 77;
#[cfg(target_arch = "sparc64")]
const SO_PEERPIDFD: libc::c_int = 0x56;

/// A pidfd for the process that connected, where the kernel gives one.
fn peer_pidfd(stream: &impl AsFd) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).ok()?;
    // SAFETY: `fd` is a live, writable c_int of `len` bytes, all the kernel writes.
    let rc = unsafe {
        libc::getsockopt(stream.as_fd().as_raw_fd(), libc::SOL_SOCKET, SO_PEERPIDFD, (&raw mut fd).cast(), &raw mut len)
    };
    // SAFETY: on success the kernel installed a new descriptor that nothing else owns.
    (rc == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind `pidfd` has not exited (signal 0 checks without sending).
fn alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal with a valid pidfd, signal 0, no siginfo and no flags.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<u8>(), 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Linux's `SO_PEERGROUPS` (since 4.13): neither nix nor libc's Linux
/// target names it yet, so this is the thin layer. 59 everywhere but
/// sparc (and alpha and parisc, which Rust does not target).
#[cfg(not(target_arch = "sparc64"))]
const SO_PEERGROUPS: libc::c_int = 59;
#[cfg(target_arch = "sparc64")]
const SO_PEERGROUPS: libc::c_int = 0x3d;

/// Kernels before 4.13 have no `SO_PEERGROUPS` (ENOPROTOOPT): the peer is then served
/// with its supplementary groups unknown (a `gid:` rule matches its primary group
/// only), said once, rather than the gateway serving no one.
fn groups_or_unknown(read: std::io::Result<Vec<u32>>) -> std::io::Result<Vec<u32>> {
    static SAID: std::sync::Once = std::sync::Once::new();
    match read {
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
            SAID.call_once(|| {
                tracing::warn!(
                    error = %e,
                    "this kernel cannot tell a gateway caller's supplementary groups (SO_PEERGROUPS): gid: callers rules match primary groups only"
                );
            });
            Ok(Vec::new())
        }
        other => other,
    }
}

/// The supplementary groups the peer had when it connected.
fn peer_groups(stream: &impl AsFd) -> std::io::Result<Vec<u32>> {
    let fd = stream.as_fd().as_raw_fd();
    // Most accounts have a handful; the kernel says how many when the buffer is short.
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * std::mem::size_of::<libc::gid_t>())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::ERANGE))?;
        // SAFETY: `groups` is a live, writable buffer of `len` bytes, which is all the
        // kernel writes; `len` is a valid place for the kernel to store the size.
        let rc =
            unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, SO_PEERGROUPS, groups.as_mut_ptr().cast(), &raw mut len) };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        // NGROUPS_MAX is 65536: a larger answer is no group list.
        if e.raw_os_error() != Some(libc::ERANGE) || count <= groups.len() || count > 65536 {
            return Err(e);
        }
        groups.resize(count, 0);
    }
}

/// One entry of a plugin's `callers`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `uid:NAME` or `uid:N`.
    Uid(u32),
    /// `gid:NAME` or `gid:N`: the caller's primary or a supplementary group.
    Gid(u32),
    /// `plugin:NAME`: that plugin's instances, known at call time (its uid may move
    /// when plugins are added, so it is not frozen here).
    Plugin(String),
}

/// As a `callers` entry, resolved: `uid:1000` for `uid:alice`.
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Uid(uid) => write!(f, "uid:{uid}"),
            Rule::Gid(gid) => write!(f, "gid:{gid}"),
            Rule::Plugin(name) => write!(f, "plugin:{name}"),
        }
    }
}

/// A plugin's `callers`: who may call it through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callers(pub Vec<Rule>);

impl Callers {
    /// Whether `peer` matches any rule; `instance_of(name, peer)` says whether the peer
    /// is a live instance of plugin `name`.
    pub fn admit(&self, peer: &Peer, instance_of: &dyn Fn(&str, &Peer) -> bool) -> bool {
        let (unmapped_uid, unmapped_gid) = overflow_ids();
        self.0.iter().any(|rule| match rule {
            Rule::Uid(uid) => peer.uid == *uid && *uid != unmapped_uid,
            Rule::Gid(gid) => peer.in_group(*gid) && *gid != unmapped_gid,
            Rule::Plugin(name) => instance_of(name, peer),
        })
    }
}

/// The ids the kernel shows for ones that have no mapping in the reader's user namespace
/// (`/proc/sys/kernel/overflow{uid,gid}`, 65534 unless changed): a caller seen with one
/// is no one in particular, so no `uid:`/`gid:` rule (`uid:nobody` included) names it.
fn overflow_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/kernel/{name}")).ok().and_then(|t| t.trim().parse().ok())
        };
        (read("overflowuid").unwrap_or(65534), read("overflowgid").unwrap_or(65534))
    })
}

/// Why a `callers` entry cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("{entry:?} is not uid:USER, gid:GROUP or plugin:NAME (a user or group may be a number)")]
    Malformed { entry: String },
    #[error("{entry:?}: no such user {name:?}")]
    NoUser { entry: String, name: String },
    #[error("{entry:?}: no such group {name:?}")]
    NoGroup { entry: String, name: String },
    #[error("{entry:?}: looking it up failed: {errno}")]
    Lookup { entry: String, errno: nix::errno::Errno },
    #[error("{entry:?}: no plugin is named {name:?}")]
    NoPlugin { entry: String, name: String },
    /// Its calls could not be told from the host account's.
    #[error(
        "{entry:?}: plugin {name:?} runs as a host account (`user`/`uid`), so its calls cannot be told from \
         that account's; name the account with uid: instead"
    )]
    SharedUid { entry: String, name: String },
}

/// How a `plugin:NAME` entry learns of the plugin: None when there is none, else
/// whether its uid is shared with the host (`user`/`uid` set).
pub type PluginIds<'a> = &'a dyn Fn(&str) -> Option<bool>;

/// Resolves one `callers` entry. A plugin running under a host account is refused here
/// rather than admitting everything else of that account; another is admitted at call
/// time by its instances' uid and cgroup (see `Plugin::runs`).
pub fn resolve(entry: &str, plugins: PluginIds<'_>) -> Result<Rule, RuleError> {
    let malformed = || RuleError::Malformed { entry: entry.to_owned() };
    let (kind, name) = entry.split_once(':').ok_or_else(malformed)?;
    if name.is_empty() {
        return Err(malformed());
    }
    let (e, n) = (entry.to_owned(), name.to_owned());
    match kind {
        "uid" => match name.parse::<u32>() {
            Ok(uid) => Ok(Rule::Uid(uid)),
            Err(_) => match nix::unistd::User::from_name(name) {
                Ok(Some(u)) => Ok(Rule::Uid(u.uid.as_raw())),
                Ok(None) => Err(RuleError::NoUser { entry: e, name: n }),
                Err(errno) => Err(RuleError::Lookup { entry: e, errno }),
            },
        },
        "gid" => match name.parse::<u32>() {
            Ok(gid) => Ok(Rule::Gid(gid)),
            Err(_) => match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Ok(Rule::Gid(g.gid.as_raw())),
                Ok(None) => Err(RuleError::NoGroup { entry: e, name: n }),
                Err(errno) => Err(RuleError::Lookup { entry: e, errno }),
            },
        },
        "plugin" => match plugins(name) {
            Some(true) => Err(RuleError::SharedUid { entry: e, name: n }),
            Some(false) => Ok(Rule::Plugin(n)),
            None => Err(RuleError::NoPlugin { entry: e, name: n }),
        },
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer::new(uid, gid, Some(1), groups)
    }

    fn ids(name: &str) -> Option<bool> {
        match name {
            "auth" => Some(false),
            "host" => Some(true),
            _ => None,
        }
    }

    fn rules(entries: &[&str]) -> Callers {
        Callers(entries.iter().map(|e| resolve(e, &ids).unwrap()).collect())
    }

    /// Plugin "auth" runs as uid 61500, and nothing else does.
    fn auth(name: &str, peer: &Peer) -> bool {
        name == "auth" && peer.uid == 61500
    }

    fn none(_: &str, _: &Peer) -> bool {
        false
    }

    #[test]
    fn a_uid_rule_admits_that_uid_alone() {
        let c = rules(&["uid:1000"]);
        assert!(c.admit(&peer(1000, 5, &[]), &auth));
        assert!(!c.admit(&peer(1001, 1000, &[1000]), &auth));
        assert!(!c.admit(&peer(0, 0, &[]), &auth), "root is no exception: it is not listed");
    }

    #[test]
    fn a_gid_rule_admits_the_primary_group_and_supplementary_ones() {
        let c = rules(&["gid:4"]);
        assert!(c.admit(&peer(1000, 4, &[]), &auth));
        assert!(c.admit(&peer(1000, 100, &[4, 27]), &auth));
        assert!(!c.admit(&peer(4, 100, &[27, 1000]), &auth));
    }

    #[test]
    fn a_plugin_rule_admits_that_plugins_instances() {
        let c = rules(&["plugin:auth"]);
        assert_eq!(c.0, [Rule::Plugin("auth".into())]);
        assert!(!c.admit(&peer(61500, 61500, &[]), &none), "not while it has no instance with that uid");
        assert!(c.admit(&peer(61500, 61500, &[]), &auth));
        assert!(!c.admit(&peer(61501, 61500, &[61500]), &auth));
    }

    #[test]
    fn ids_the_kernel_could_not_map_match_no_rule() {
        let (uid, gid) = overflow_ids();
        let c = rules(&[&format!("uid:{uid}"), &format!("gid:{gid}")]);
        assert!(!c.admit(&peer(uid, gid, &[gid]), &none), "an unmapped caller is not `nobody`");
        assert!(!c.admit(&peer(1000, 1000, &[gid]), &none));
    }

    #[test]
    fn any_rule_admits() {
        let c = rules(&["uid:7", "gid:8", "plugin:auth"]);
        assert!(c.admit(&peer(7, 1, &[]), &auth));
        assert!(c.admit(&peer(1, 1, &[8]), &auth));
        assert!(c.admit(&peer(61500, 1, &[]), &auth));
        assert!(!c.admit(&peer(1, 1, &[2, 3]), &auth));
        assert!(!Callers(Vec::new()).admit(&peer(0, 0, &[]), &none), "an empty list admits no one");
    }

    #[test]
    fn names_resolve_to_numbers() {
        assert_eq!(resolve("uid:root", &ids), Ok(Rule::Uid(0)));
        assert_eq!(resolve("gid:root", &ids), Ok(Rule::Gid(0)));
        assert_eq!(resolve("gid:12345", &ids), Ok(Rule::Gid(12345)));
    }

    #[test]
    fn entries_that_cannot_be_resolved_say_why() {
        let err = |e: &str| resolve(e, &ids).unwrap_err().to_string();
        assert_eq!(err("uid:no-such-user-x"), "\"uid:no-such-user-x\": no such user \"no-such-user-x\"");
        assert_eq!(err("gid:no-such-group-x"), "\"gid:no-such-group-x\": no such group \"no-such-group-x\"");
        assert_eq!(err("plugin:ghost"), "\"plugin:ghost\": no plugin is named \"ghost\"");
        assert!(err("plugin:host").contains("plugin \"host\" runs as a host account"), "{}", err("plugin:host"));
        for bad in ["1000", "uid:", "user:1000", ":x"] {
            assert_eq!(resolve(bad, &ids), Err(RuleError::Malformed { entry: bad.into() }), "{bad}");
        }
    }

    #[test]
    fn a_kernel_without_peer_groups_serves_with_the_groups_unknown() {
        let no_option = std::io::Error::from_raw_os_error(libc::ENOPROTOOPT);
        assert_eq!(groups_or_unknown(Err(no_option)).unwrap(), Vec::<u32>::new());
        let other = groups_or_unknown(Err(std::io::Error::from_raw_os_error(libc::EBADF))).unwrap_err();
        assert_eq!(other.raw_os_error(), Some(libc::EBADF));
        assert_eq!(groups_or_unknown(Ok(vec![4])).unwrap(), [4]);
    }

    #[tokio::test]
    async fn a_connections_peer_is_who_connected() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let p = Peer::of(&a).unwrap();
        assert_eq!(p.uid, nix::unistd::getuid().as_raw());
        assert_eq!(p.gid, nix::unistd::getgid().as_raw());
        assert_eq!(p.pid, Some(std::process::id() as i32));
        assert_eq!(p.cgroups(), Some(std::fs::read_to_string("/proc/self/cgroup").unwrap().as_str()));
        let mut mine: Vec<u32> = nix::unistd::getgroups().unwrap().iter().map(|g| g.as_raw()).collect();
        mine.sort_unstable();
        mine.dedup();
        assert_eq!(&*p.groups, mine.as_slice());
    }

    #[test]
    fn the_readme_example_is_valid_and_resolves_as_it_says() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = &readme[readme.find("## Routing and callers").unwrap()..];
        let block = &section[section.find("```toml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        let head = "[supervisor.defaults]\ntier = \"none\"\n[supervisor.sandbox]\nallow_unsandboxed = true\n";
        // The example's binaries are made up; the checks of a real one are tested elsewhere.
        // A minimal host may lack the group `adm`: root's stands in for it there.
        let adm = if nix::unistd::Group::from_name("adm").unwrap().is_some() { "gid:adm" } else { "gid:root" };
        let text = block
            .replace("\"gid:adm\"", &format!("{adm:?}"))
            .replace("binary = \"billing\"", "binary = \"/bin/true\"")
            .replace("\"auth\"\nbinary = \"auth\"", "\"auth\"\nbinary = \"/bin/true\"");
        let config: crate::config::Config = format!("{head}{text}").parse().unwrap_or_else(|e| panic!("{e}\n{block}"));
        let specs = config.specs();
        let adm = nix::unistd::Group::from_name("adm").unwrap().map_or(0, |g| g.gid.as_raw());
        assert_eq!(specs[0].callers, Some(Callers(vec![Rule::Uid(1000), Rule::Gid(adm), Rule::Plugin("auth".into())])));
        assert_eq!((specs[0].declared_name.as_str(), specs[1].declared_name.as_str()), ("billing", "billing"));
        assert_eq!(specs[1].callers, None);
    }
}
