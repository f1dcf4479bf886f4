//! What the kernel and the cgroup filesystem will take, checked with the rest
//! of the config (so `check-config` and the daemon agree, and nothing is
//! refused only once it runs): plugin names as cgroup directory names,
//! quotas within the kernel's ranges, the subtree's name and parent, and the
//! arguments and environment `execve` will pass.

use plugin_proto::launch::{COOKIE_ENV, COOKIE_VALUE, HOST_SOCKET_ENV, INSTANCE_ENV};

use super::load::{Problems, Seg};
use super::validate::shown_name;
use super::{Config, PluginConfig, QuotaConfig};
use crate::sandbox::cgroup;
use crate::sandbox::tier::Quota;

/// Why a plugin name cannot be a cgroup directory (`cgroup.procs`,
/// `memory.max` would collide with control files).
pub(super) fn cgroup_name_problem(name: &str) -> Option<String> {
    cgroup::validate_name("plugin", name).err().map(|e| e.to_string())
}

/// Checks `[supervisor.cgroup]`: the daemon builds `<parent>/<name>` in every
/// hierarchy, so `name` must be one plain directory name and `parent` a
/// cgroup path that stays inside the cgroup filesystem.
pub(super) fn check_cgroup_section(config: &Config, p: &mut Problems<'_>) {
    let c = &config.supervisor.cgroup;
    if let Err(e) = cgroup::validate_name("subtree", &c.name) {
        p.at(&[Seg::Key("supervisor"), Seg::Key("cgroup"), Seg::Key("name")], e.to_string());
    }
    if let Some(parent) = &c.parent
        && let Err(e) = cgroup::validate_parent(parent)
    {
        p.at(&[Seg::Key("supervisor"), Seg::Key("cgroup"), Seg::Key("parent")], e.to_string());
    }
}

/// The quotas a plugin's instances get (the tier's, overridden by the
/// config's) must be ones the kernel accepts; else every start would fail.
pub(super) fn quota_problem(tier: Option<&Quota>, q: &QuotaConfig) -> Option<String> {
    let own = crate::sandbox::quota::limits(q);
    if let Err(e) = own.validate() {
        return Some(e.to_string());
    }
    let effective = crate::sandbox::quota::effective(tier, q, &QuotaConfig::default());
    crate::sandbox::quota::limits(&effective).validate().err().map(|e| format!("with the tier's defaults: {e}"))
}

/// The kernel's MAX_ARG_STRLEN (32 pages): `execve` fails with E2BIG when any one argument
/// or environment string takes more than this with its NUL.
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The most a plugin's arguments and environment may take together, counted as `execve`
/// counts them (each string with its NUL, and a pointer each). The kernel allows a quarter
/// of the stack limit the supervisor runs under (2 MiB of the usual 8 MiB): half of that
/// still fits when the limit is lowered to 4 MiB, and no plugin needs more.
pub const MAX_EXEC_BYTES: usize = 1 << 20;

/// What the instance id (in the supervisor's own variable) may take: it is only known at
/// start, and is the plugin's name (at most 64 bytes) with a few numbers.
const INSTANCE_ID_ROOM: usize = 256;

/// Checks that `execve` will take plugin `i`'s arguments and environment: each string
/// within [`MAX_ARG_STRLEN`] and all of them within [`MAX_EXEC_BYTES`]. Otherwise
/// `check-config` says ok and every start fails with E2BIG.
///
/// An `env` entry is counted as the `NAME=VALUE` string the plugin gets, with the value
/// this process has; one not set here counts as if set empty, as the daemon's environment
/// may have it.
pub(super) fn check_exec_strings(config: &Config, plugin: &PluginConfig, i: usize, p: &mut Problems<'_>) {
    // What execve charges for a string of `len` bytes: its NUL and its pointer besides.
    let charged = |len: usize| len + 1 + size_of::<usize>();
    let longest = MAX_ARG_STRLEN - 1;
    let why =
        format!("execve refuses (E2BIG) any above {longest} bytes (MAX_ARG_STRLEN, {MAX_ARG_STRLEN} with its NUL)");
    let at = |key: &'static str, j: usize| [Seg::Key("plugin"), Seg::Index(i), Seg::Key(key), Seg::Index(j)];
    let mut args = charged(config.resolve(&plugin.binary).as_os_str().len());
    for (j, arg) in plugin.args.iter().enumerate() {
        if arg.len() > longest {
            p.at(&at("args", j), format!("an argument of {} bytes: {why}", arg.len()));
        }
        args += charged(arg.len());
    }
    let mut env = charged(COOKIE_ENV.len() + 1 + COOKIE_VALUE.len()) + charged(INSTANCE_ENV.len() + 1 + INSTANCE_ID_ROOM)
            // An inode number: at most 20 digits.
            + charged(HOST_SOCKET_ENV.len() + 1 + 20);
    for (j, name) in plugin.env.iter().enumerate() {
        // Such a name is refused as one, and cannot be looked up.
        if name.is_empty() || name.contains(['=', '\0']) {
            continue;
        }
        let value = std::env::var_os(name).map(|v| v.len());
        let len = name.len() + 1 + value.unwrap_or(0);
        if len > longest {
            let with = if value.is_some() { "with the value it has here" } else { "even with an empty value" };
            p.at(
                &at("env", j),
                format!("variable {}: NAME=VALUE would be {len} bytes {with}: {why}", shown_name(name)),
            );
        }
        env += charged(len);
    }
    if args + env > MAX_EXEC_BYTES {
        let key = if args >= env { "args" } else { "env" };
        p.at(
            &[Seg::Key("plugin"), Seg::Index(i), Seg::Key(key)],
            format!(
                "the arguments ({args} bytes, the binary's path included) and the environment ({env} bytes, the supervisor's own variables included) would take {} bytes, each string counted with its NUL and a pointer; at most {MAX_EXEC_BYTES} are allowed (the kernel takes a quarter of the stack limit, 2 MiB of the usual 8 MiB)",
                args + env
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The (key, message) of each problem of a plugin with these `args` and `env`.
    fn problems(args: &[String], env: &[String]) -> Vec<(String, String)> {
        let text = format!(
            "[supervisor.sandbox]\nallow_unsandboxed = true\n[[plugin]]\nname = \"p\"\nbinary = \"/bin/true\"\n\
             tier = \"none\"\nargs = {args:?}\nenv = {env:?}\n"
        );
        match super::super::load::parse(&text, Path::new("/etc/ps/supervisor.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(|p| (p.key.clone(), p.message.clone())).collect(),
        }
    }

    const WHY: &str = "execve refuses (E2BIG) any above 131071 bytes (MAX_ARG_STRLEN, 131072 with its NUL)";

    /// A 200 KB argument was said to be ok, and every start then failed with E2BIG.
    #[test]
    fn an_argument_or_variable_execve_would_refuse_is_refused_naming_the_entry() {
        let longest = "a".repeat(131_071);
        assert_eq!(problems(&["-v".into(), longest], &[]), []);
        assert_eq!(
            problems(&["-v".into(), "a".repeat(131_072), "b".repeat(200_000)], &[]),
            [
                ("plugin[0].args[1]".to_owned(), format!("an argument of 131072 bytes: {WHY}")),
                ("plugin[0].args[2]".to_owned(), format!("an argument of 200000 bytes: {WHY}")),
            ]
        );
        // Passed as NAME=VALUE: a name not set here still takes its own length and "=".
        let name = "V".repeat(131_071);
        assert_eq!(
            problems(&[], &["HOME".into(), name.clone()]),
            [(
                "plugin[0].env[1]".to_owned(),
                format!(
                    "variable \"{}\"... (131071 bytes): NAME=VALUE would be 131072 bytes even with an empty value: {WHY}",
                    &name[..64]
                )
            )]
        );
        assert_eq!(problems(&[], &[name[1..].to_owned()]), []);
    }

    #[test]
    fn arguments_and_environment_beyond_a_mebibyte_together_are_refused() {
        let eight: Vec<String> = (0..8).map(|_| "a".repeat(120_000)).collect();
        assert_eq!(problems(&eight, &["HOME".into()]), []);
        let nine: Vec<String> = (0..9).map(|_| "a".repeat(120_000)).collect();
        assert_eq!(
            problems(&nine, &[]),
            [(
                "plugin[0].args".to_owned(),
                "the arguments (1080099 bytes, the binary's path included) and the environment (414 bytes, the \
                 supervisor's own variables included) would take 1080513 bytes, each string counted with its NUL and \
                 a pointer; at most 1048576 are allowed (the kernel takes a quarter of the stack limit, 2 MiB of the \
                 usual 8 MiB)"
                    .to_owned()
            )]
        );
    }
}
