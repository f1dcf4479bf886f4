//! The loader-file set is what ld.so really opens: checked against `ldd` on real binaries,
//! and against the search rules on fixtures built from copies of real libraries.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::{CODE_EXIT_0, dynamic_elf64, host_binary, tiny_elf32, tiny_elf64, write_exe};
use crate::integrity::dst::expand_dst;
use crate::integrity::libraries::{self, LibraryError, LoaderFiles, SearchConfig};
use crate::integrity::{DEFAULT_MAX_FILE_SIZE, ElfError, ElfInfo, Machine, ObjectType, Subject, loader_host};
use crate::sandbox::confine::ImageGrants;

/// Canonical paths `ldd` reports (it runs the real loader in trace mode).
fn ldd(binary: &Path) -> BTreeSet<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(out.status.success(), "ldd failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once(" => ") {
                Some((_, rest)) => rest,
                None => line,
            };
            let path = path.split(" (").next()?;
            path.starts_with('/').then(|| fs::canonicalize(path).expect("ldd path exists"))
        })
        .collect()
}

fn loaded(files: &LoaderFiles) -> BTreeSet<PathBuf> {
    files.interpreter.iter().chain(&files.libraries).map(|o| o.canonical.clone()).collect()
}

fn resolve_file(name: &str, path: &Path) -> LoaderFiles {
    libraries::resolve_path(&Subject::new(name, path), &SearchConfig::host()).unwrap()
}

#[test]
fn bin_ls_resolves_to_exactly_what_ldd_reports() {
    let files = resolve_file("ls", Path::new("/bin/ls"));
    assert_eq!(loaded(&files), ldd(Path::new("/bin/ls")));
    assert!(files.libraries.iter().any(|l| l.name == "libc.so.6"));
}

#[test]
fn the_test_executable_resolves_to_exactly_what_ldd_reports() {
    let exe = fs::canonicalize("/proc/self/exe").unwrap();
    let files = resolve_file("self", &exe);
    assert_eq!(loaded(&files), ldd(&exe));
}

#[test]
fn the_grant_set_holds_canonical_paths_and_the_loader_cache() {
    let files = resolve_file("ls", Path::new("/bin/ls"));
    let paths = files.paths();
    for path in &paths {
        assert_eq!(&fs::canonicalize(path).unwrap(), path, "{path:?} is not canonical");
    }
    if Path::new(libraries::DEFAULT_LD_SO_CACHE).is_file() {
        assert!(paths.contains(Path::new(libraries::DEFAULT_LD_SO_CACHE)));
    }
    let interp = files.interpreter.as_ref().unwrap();
    assert!(paths.contains(&interp.canonical));
}

#[test]
fn a_static_binary_needs_no_loader_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_exe(dir.path(), "static", &tiny_elf64(Machine::host().e_machine, 2, CODE_EXIT_0, false));
    let files = resolve_file("static", &path);
    assert!(files.paths().is_empty(), "{files:?}");
}

/// A fixture tree: an executable path (whose ElfInfo the test writes by hand) and a
/// directory of library copies.
struct Tree {
    _dir: tempfile::TempDir,
    exe: PathBuf,
    libdir: PathBuf,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("app/bin");
    let libdir = dir.path().join("app/lib");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&libdir).unwrap();
    let exe = write_exe(&bin, "app", b"placeholder: only its location matters");
    Tree { _dir: dir, exe, libdir: fs::canonicalize(libdir).unwrap() }
}

fn system_lib(name: &str) -> PathBuf {
    loader_host::default_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not in the default directories"))
}

fn copy_lib(name: &str, into: &Path) -> PathBuf {
    let to = into.join(name);
    fs::copy(system_lib(name), &to).unwrap();
    to
}

fn exe_info(needed: &[&str], rpath: Option<&str>, runpath: Option<&str>) -> ElfInfo {
    let host =
        crate::integrity::elf::inspect(&Subject::new("self", "/proc/self/exe"), host_binary(), DEFAULT_MAX_FILE_SIZE)
            .unwrap();
    ElfInfo {
        file_size: 0,
        machine: Machine::host(),
        object_type: ObjectType::Dynamic,
        entry: 0x1000,
        interpreter: host.interpreter,
        has_dynamic: true,
        needed: needed.iter().map(OsString::from).collect(),
        rpath: rpath.map(OsString::from),
        runpath: runpath.map(OsString::from),
        soname: None,
        nodeflib: false,
        writable_and_executable: None,
    }
}

fn resolve(tree: &Tree, info: &ElfInfo) -> Result<LoaderFiles, LibraryError> {
    libraries::resolve(&Subject::new("app", &tree.exe), info, &SearchConfig::host())
}

fn found(files: &LoaderFiles, name: &str) -> PathBuf {
    files
        .libraries
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("{name} not loaded: {files:?}"))
        .canonical
        .clone()
}

#[test]
fn runpath_with_origin_is_searched_before_the_system() {
    let t = tree();
    let local = copy_lib("libc.so.6", &t.libdir);
    let files = resolve(&t, &exe_info(&["libc.so.6"], None, Some("$ORIGIN/../lib"))).unwrap();
    assert_eq!(found(&files, "libc.so.6"), local);
}

#[test]
fn rpath_reaches_indirect_dependencies_but_runpath_does_not() {
    let t = tree();
    let libm = copy_lib("libm.so.6", &t.libdir);
    let libc = copy_lib("libc.so.6", &t.libdir);
    let dir = t.libdir.to_str().unwrap();

    let with_rpath = resolve(&t, &exe_info(&["libm.so.6"], Some(dir), None)).unwrap();
    assert_eq!(found(&with_rpath, "libm.so.6"), libm);
    assert_eq!(found(&with_rpath, "libc.so.6"), libc, "libm's libc comes via the exe's RPATH");

    let with_runpath = resolve(&t, &exe_info(&["libm.so.6"], None, Some(dir))).unwrap();
    assert_eq!(found(&with_runpath, "libm.so.6"), libm);
    assert_eq!(
        found(&with_runpath, "libc.so.6"),
        fs::canonicalize(system_lib("libc.so.6")).unwrap(),
        "RUNPATH applies to the exe's own needs only"
    );
}

#[test]
fn runpath_disables_rpath_of_the_same_object() {
    let t = tree();
    copy_lib("libc.so.6", &t.libdir);
    let dir = t.libdir.to_str().unwrap();
    let files = resolve(&t, &exe_info(&["libc.so.6"], Some(dir), Some("/nonexistent"))).unwrap();
    assert_eq!(found(&files, "libc.so.6"), fs::canonicalize(system_lib("libc.so.6")).unwrap());
}

#[test]
fn a_library_of_another_class_is_skipped_like_ld_so_skips_it() {
    let t = tree();
    fs::write(t.libdir.join("libc.so.6"), tiny_elf32(3)).unwrap();
    let dir = t.libdir.to_str().unwrap();
    let files = resolve(&t, &exe_info(&["libc.so.6"], None, Some(dir))).unwrap();
    assert_eq!(found(&files, "libc.so.6"), fs::canonicalize(system_lib("libc.so.6")).unwrap());
}

#[test]
fn a_corrupt_library_on_the_path_is_an_error_naming_it() {
    let t = tree();
    fs::write(t.libdir.join("libc.so.6"), b"not a library").unwrap();
    let dir = t.libdir.to_str().unwrap();
    let err = resolve(&t, &exe_info(&["libc.so.6"], None, Some(dir))).unwrap_err();
    match &err {
        LibraryError::Unusable { name, source, .. } => {
            assert_eq!(name, "libc.so.6");
            assert!(matches!(**source, ElfError::NotElf { .. }), "{source:?}");
        }
        other => panic!("expected Unusable, got {other:?}"),
    }
    assert!(err.to_string().contains("(loading libc.so.6 for"), "{err}");
}

#[test]
fn a_missing_library_names_itself_its_requirer_and_the_searched_dirs() {
    let t = tree();
    let dir = t.libdir.to_str().unwrap();
    let err = resolve(&t, &exe_info(&["libnope.so.1"], None, Some(dir))).unwrap_err();
    assert!(matches!(err, LibraryError::NotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "plugin \"app\": library libnope.so.1 needed by {} was not found (searched {dir}, ",
            t.exe.display()
        )),
        "{text}"
    );
}

#[test]
fn nodeflib_keeps_the_default_directories_out() {
    let t = tree();
    let mut info = exe_info(&["libc.so.6"], None, None);
    info.nodeflib = true;
    let err = resolve(&t, &info).unwrap_err();
    assert!(matches!(err, LibraryError::NotFound { .. }), "{err:?}");
}

#[test]
fn an_absolute_needed_name_is_used_as_is() {
    let t = tree();
    let local = copy_lib("libc.so.6", &t.libdir);
    let name = local.to_str().unwrap();
    let files = resolve(&t, &exe_info(&[name], None, None)).unwrap();
    assert_eq!(found(&files, name), local);
}

#[test]
fn dynamic_string_tokens_expand_like_ld_so() {
    let origin = Path::new("/opt/app/bin");
    let expand = |s: &str, platform| expand_dst(s.as_bytes(), origin, "lib/x86_64-linux-gnu", platform);
    assert_eq!(expand("$ORIGIN/../lib", None), Some(PathBuf::from("/opt/app/bin/../lib")));
    assert_eq!(expand("${ORIGIN}/x", None), Some(PathBuf::from("/opt/app/bin/x")));
    assert_eq!(expand("/usr/$LIB", None), Some(PathBuf::from("/usr/lib/x86_64-linux-gnu")));
    assert_eq!(expand("/p/$PLATFORM", Some("x86_64")), Some(PathBuf::from("/p/x86_64")));
    assert_eq!(expand("/p/$PLATFORM", None), None, "an unknown token drops the entry");
    assert_eq!(expand("/a/$ORIGINAL", None), Some(PathBuf::from("/a/$ORIGINAL")));
    assert_eq!(expand("/a/$", None), Some(PathBuf::from("/a/$")));
}

#[test]
fn legacy_and_hwcaps_subdirectories_are_ordered_like_glibc_2_36() {
    let dirs = loader_host::subdirs_for(&["x86-64-v3"], Some("x86_64"), &["x86_64"], true);
    let dirs: Vec<_> = dirs.iter().map(|d| d.to_str().unwrap()).collect();
    assert_eq!(
        dirs,
        ["glibc-hwcaps/x86-64-v3", "tls/x86_64/x86_64", "tls/x86_64", "tls", "x86_64/x86_64", "x86_64", ""]
    );
    let modern = loader_host::subdirs_for(&["x86-64-v2"], Some("x86_64"), &["x86_64"], false);
    assert_eq!(modern, [PathBuf::from("glibc-hwcaps/x86-64-v2"), PathBuf::new()]);
}

/// Compares our subdirectory list with the search path the host's ld.so prints for an
/// LD_LIBRARY_PATH entry, so a glibc upgrade that changes the rules fails here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn search_subdirectories_match_what_the_host_ld_so_searches() {
    const PROBE: &str = "/nonexistent-integrity-probe";
    let out = Command::new("/bin/true").env("LD_DEBUG", "libs").env("LD_LIBRARY_PATH", PROBE).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("search path=") && l.contains("(LD_LIBRARY_PATH)"))
        .unwrap_or_else(|| panic!("no LD_LIBRARY_PATH search line in:\n{stderr}"));
    let list = line.split("search path=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap();
    let mut theirs: Vec<PathBuf> = Vec::new();
    for entry in list.split(':') {
        let sub = entry.strip_prefix(PROBE).unwrap().trim_start_matches('/');
        let sub = PathBuf::from(sub);
        if !theirs.contains(&sub) {
            theirs.push(sub);
        }
    }
    assert_eq!(loader_host::search_subdirs(), theirs);
}

#[test]
fn a_verified_binary_resolves_the_files_its_sealed_image_needs() {
    use crate::integrity::{Policy, VerifiedBinary};
    let dir = tempfile::tempdir().unwrap();
    let path = write_exe(dir.path(), "true", super::support::small_system_binary());
    let verified = VerifiedBinary::open("true", &path, &Policy::default()).unwrap();
    let files = verified.loader_files(&SearchConfig::host()).unwrap();
    assert_eq!(loaded(&files), ldd(&path));
}

/// A fixture needing libc.so.6 with `runpath`, in a directory whose lib/ holds a copy of
/// libc, and the sealed image the supervisor runs it from.
fn sealed_app_with_runpath(
    runpath: impl FnOnce(&Path) -> String,
) -> (tempfile::TempDir, PathBuf, crate::integrity::VerifiedImage) {
    let dir = tempfile::tempdir().unwrap();
    let libdir = dir.path().join("lib");
    fs::create_dir(&libdir).unwrap();
    let local = fs::canonicalize(copy_lib("libc.so.6", &libdir)).unwrap();
    let interpreter = exe_info(&[], None, None).interpreter.unwrap();
    let path = write_exe(dir.path(), "app", &dynamic_elf64(&interpreter, "libc.so.6", &runpath(&libdir)));
    let image = crate::integrity::VerifiedImage::load("app", &path, &crate::integrity::Policy::default())
        .unwrap_or_else(|e| panic!("{e}"));
    (dir, local, image)
}

/// ld.so takes the executable's $ORIGIN from /proc/self/exe, which for the sealed image
/// every plugin runs from reads "/memfd:app (deleted)": $ORIGIN is "/", and a plugin
/// built with RUNPATH=$ORIGIN/lib failed at start with "cannot open shared object file"
/// although its libraries had been resolved (and granted) next to the binary.
#[test]
fn an_origin_entry_of_a_binary_run_from_its_sealed_image_is_refused_with_its_place() {
    // lib/ holds a libc of its own, which the sealed image's loader would not find: it
    // would run against the system's.
    let (_dir, _, image) = sealed_app_with_runpath(|_| "/nonexistent:$ORIGIN/lib".to_owned());
    let err =
        image.binary().loader_files(&SearchConfig::host()).expect_err("$ORIGIN cannot name the binary's directory");
    match &err {
        LibraryError::OriginOfSealedImage { tag, entry, .. } => {
            assert_eq!((*tag, entry.as_str()), ("DT_RUNPATH", "$ORIGIN/lib"));
        }
        other => panic!("refused for another reason: {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("plugin \"app\"") && text.contains("\"$ORIGIN/lib\" in its DT_RUNPATH"), "{text}");
    // With nothing beside the binary, the loader finds what it would find from there:
    // a RUNPATH build tools added costs nothing.
    let dir = tempfile::tempdir().unwrap();
    let interpreter = exe_info(&[], None, None).interpreter.unwrap();
    let path = write_exe(dir.path(), "app", &dynamic_elf64(&interpreter, "libc.so.6", "/nonexistent:$ORIGIN/lib"));
    let image = crate::integrity::VerifiedImage::load("app", &path, &crate::integrity::Policy::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let files = image.binary().loader_files(&SearchConfig::host()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found(&files, "libc.so.6"), fs::canonicalize(system_lib("libc.so.6")).unwrap());
    // A library found neither way is refused as such, naming it.
    let path = write_exe(dir.path(), "gone", &dynamic_elf64(&interpreter, "libgone.so", "$ORIGIN/lib"));
    let image = crate::integrity::VerifiedImage::load("gone", &path, &crate::integrity::Policy::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let err = image.binary().loader_files(&SearchConfig::host()).expect_err("libgone.so is nowhere");
    assert!(matches!(&err, LibraryError::NotFound { name, .. } if name == "libgone.so"), "{err}");
}

#[test]
fn an_absolute_search_entry_of_a_sealed_image_still_resolves() {
    let (_dir, local, image) = sealed_app_with_runpath(|lib| lib.to_str().unwrap().to_owned());
    let files = image.binary().loader_files(&SearchConfig::host()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found(&files, "libc.so.6"), local);
}

/// ld.so expands `$ORIGIN` in a DT_NEEDED name against the requiring object's directory;
/// such a name was refused as "a relative path, which would depend on the working
/// directory", which it is not.
#[test]
fn an_origin_in_a_needed_name_names_a_file_beside_the_library_needing_it() {
    let t = tree();
    let local = fs::canonicalize(copy_lib("libc.so.6", &t.libdir)).unwrap();
    let interpreter = exe_info(&[], None, None).interpreter.unwrap();
    let outer = dynamic_elf64(&interpreter, "$ORIGIN/libc.so.6", "/nonexistent");
    fs::write(t.libdir.join("libouter.so"), outer).unwrap();
    let dir = t.libdir.to_str().unwrap();
    let files = resolve(&t, &exe_info(&["libouter.so"], None, Some(dir))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found(&files, "$ORIGIN/libc.so.6"), local);
    // The executable's own: run from its sealed image, its $ORIGIN is not its directory,
    // and a name found only there is refused, naming it.
    let sealed = libraries::resolve_sealed(
        &Subject::new("app", &t.exe),
        &exe_info(&["$ORIGIN/../lib/libouter.so"], None, None),
        &SearchConfig::host(),
    )
    .expect_err("the executable's $ORIGIN is not its directory");
    assert!(
        matches!(&sealed, LibraryError::OriginOfSealedImage { tag: "DT_NEEDED", entry, .. } if entry == "$ORIGIN/../lib/libouter.so"),
        "{sealed}"
    );
}

/// Someone not trusted to change what plugins load: any plugin's uid, say.
const PLUGIN_UID: u32 = 61_998;

fn give(path: &Path, uid: u32, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn writable_error(
    err: LibraryError,
) -> (PathBuf, crate::integrity::owners::Writer, crate::integrity::owners::Use, String) {
    let text = err.to_string();
    match err {
        LibraryError::Writable { what, .. } => (what.exposed, what.writer, what.used, text),
        other => panic!("expected Writable, got {other:?}"),
    }
}

/// A library a plugin's uid could rewrite would run that plugin's code in the next start of
/// every plugin loading it, past their pins and signatures.
#[test]
fn a_library_a_plugin_could_rewrite_is_refused_naming_it_and_who() {
    use crate::integrity::owners::{Use, Writer};
    assert!(nix::unistd::geteuid().is_root(), "this test gives files to another uid and needs root");
    let t = tree();
    let local = copy_lib("libc.so.6", &t.libdir);
    let info = exe_info(&["libc.so.6"], None, Some("$ORIGIN/../lib"));
    assert_eq!(found(&resolve(&t, &info).unwrap(), "libc.so.6"), local, "root's: loaded");

    give(&local, PLUGIN_UID, 0o644);
    let (exposed, writer, used, text) = writable_error(resolve(&t, &info).unwrap_err());
    assert_eq!((exposed, writer, used), (local.clone(), Writer::Owner(PLUGIN_UID), Use::Opened));
    assert!(
        text.contains(&format!("{} can be changed by its owner, uid {PLUGIN_UID}, not only by root", local.display())),
        "{text}"
    );
    assert!(text.contains("(libc.so.6, needed by"), "{text}");

    give(&local, 0, 0o644);
    give(&t.libdir, 0, 0o777);
    let (exposed, writer, ..) = writable_error(resolve(&t, &info).unwrap_err());
    assert_eq!((exposed, writer), (t.libdir.clone(), Writer::Others(0o777)), "its directory: it can be replaced");
}

/// A directory searched before the one a library is found in is where a plugin could put a
/// library of the same name, loaded instead at the next start.
#[test]
fn a_directory_searched_first_where_a_plugin_could_plant_a_library_is_refused() {
    use crate::integrity::owners::{Use, Writer};
    assert!(nix::unistd::geteuid().is_root(), "this test gives files to another uid and needs root");
    let t = tree();
    let dir = t.libdir.to_str().unwrap();
    let info = exe_info(&["libc.so.6"], None, Some(dir));
    let system = fs::canonicalize(system_lib("libc.so.6")).unwrap();
    assert_eq!(found(&resolve(&t, &info).unwrap(), "libc.so.6"), system, "an empty root-owned RUNPATH dir");

    give(&t.libdir, PLUGIN_UID, 0o755);
    let (exposed, writer, used, text) = writable_error(resolve(&t, &info).unwrap_err());
    assert_eq!((exposed, writer, used), (t.libdir.clone(), Writer::Owner(PLUGIN_UID), Use::SearchedFirst));
    assert!(text.contains(&format!("the loader looks in {dir}")), "{text}");
    assert!(text.contains("for libc.so.6"), "{text}");

    // Sticky, as /tmp: nobody may replace another's file, but anyone may add a name.
    give(&t.libdir, 0, 0o1777);
    let (exposed, writer, ..) = writable_error(resolve(&t, &info).unwrap_err());
    assert_eq!((exposed, writer), (t.libdir.clone(), Writer::Others(0o1777)));
    // A RUNPATH directory that does not exist is judged where it could be made.
    let missing = t.libdir.join("not-yet");
    let info = exe_info(&["libc.so.6"], None, Some(missing.to_str().unwrap()));
    let (exposed, ..) = writable_error(resolve(&t, &info).unwrap_err());
    assert_eq!(exposed, t.libdir);

    give(&t.libdir, 0, 0o755);
    assert_eq!(found(&resolve(&t, &info).unwrap(), "libc.so.6"), system);
}

/// The binary's own directory, where `$ORIGIN` would point were it not run from a sealed
/// copy, is compared and never opened: a bundle a user owns was taken as "nothing found
/// beside the binary" (refused for its owner there), and the binary ran against the
/// system's libraries instead of being refused.
#[test]
fn an_origin_bundle_is_refused_whoever_owns_it() {
    assert!(nix::unistd::geteuid().is_root(), "this test gives files to another uid and needs root");
    let (dir, _, image) = sealed_app_with_runpath(|_| "$ORIGIN/lib".to_owned());
    give(&dir.path().join("lib"), PLUGIN_UID, 0o755);
    let err = image.binary().loader_files(&SearchConfig::host()).expect_err("a bundle the sealed image cannot see");
    assert!(matches!(&err, LibraryError::OriginOfSealedImage { tag: "DT_RUNPATH", .. }), "{err}");
}

/// A search directory the sealed image's loader tries that a plugin could write is the
/// refusal, even where a bundle beside the binary would have been found: it was said as
/// an `$ORIGIN` problem, and a refresh took it for a passing failure.
#[test]
fn a_writable_directory_the_sealed_image_searches_is_refused_as_such_beside_an_origin_bundle() {
    assert!(nix::unistd::geteuid().is_root(), "this test gives files to another uid and needs root");
    let planted = tempfile::tempdir().unwrap();
    let planted_dir = fs::canonicalize(planted.path()).unwrap();
    let (dir, _, image) = sealed_app_with_runpath(|_| format!("$ORIGIN/lib:{}", planted_dir.display()));
    give(&planted_dir, PLUGIN_UID, 0o755);
    let err = image.binary().loader_files(&SearchConfig::host()).expect_err("a directory a plugin could write");
    let (exposed, _, used, _) = writable_error(err);
    assert_eq!((exposed, used), (planted_dir.clone(), crate::integrity::owners::Use::SearchedFirst));
    drop(dir);
}

/// The loader opens a second name of a file it has loaded (and then finds it loaded): that
/// path is stamped too, so a later start sees it repointed to another file.
#[test]
fn every_path_the_loader_opens_is_stamped_even_a_second_name_of_one_file() {
    let t = tree();
    let a = copy_lib("libc.so.6", &t.libdir);
    let b = t.libdir.join("libc-again.so");
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let dir = t.libdir.to_str().unwrap();
    let files = resolve(&t, &exe_info(&["libc.so.6", "libc-again.so"], None, Some(dir))).unwrap();
    assert_eq!(files.libraries.iter().filter(|l| l.canonical == a).count(), 1, "one link-map entry");
    let stamped: Vec<&PathBuf> = files.stamps.iter().map(|(p, _)| p).collect();
    assert!(stamped.contains(&&a) && stamped.contains(&&b), "{stamped:?}");
}

/// A library planted later in a directory the loader searches before the one it found the
/// library in would be what the loader opens at the next start: not granted, and never
/// passed by the owners' check. The grants were kept as fresh, since only the files found
/// were stamped; every place searched first is stamped now, with what it held (a missing
/// one by its missing ancestor).
#[test]
fn a_library_planted_later_where_the_loader_looks_first_makes_the_grants_stale() {
    let t = tree();
    let first = t.libdir.join("first");
    fs::create_dir(&first).unwrap();
    let missing = t.libdir.join("later/deeper");
    let local = copy_lib("libc.so.6", &t.libdir);
    let runpath = format!("{}:{}:{}", first.display(), missing.display(), t.libdir.display());
    let stale_once = |plant: &dyn Fn()| {
        crate::test_files::settle_stamps();
        let files = resolve(&t, &exe_info(&["libc.so.6"], None, Some(&runpath))).unwrap();
        assert_eq!(found(&files, "libc.so.6"), local);
        let grants = ImageGrants::of(files);
        assert!(!grants.stale(), "nothing changed yet");
        plant();
        grants.stale()
    };
    assert!(
        stale_once(&|| {
            fs::copy(&local, first.join("libc.so.6")).unwrap();
        }),
        "planted in a place searched first"
    );
    fs::remove_file(first.join("libc.so.6")).unwrap();
    let plant_deeper = || {
        fs::create_dir_all(&missing).unwrap();
        fs::copy(&local, missing.join("libc.so.6")).unwrap();
    };
    assert!(stale_once(&plant_deeper), "planted in a place searched first that was missing");
}

/// A file the loader passes over (another class) rewritten in place into a library it
/// would load changes no directory entry: the file itself is stamped.
#[test]
fn a_file_passed_over_rewritten_into_a_library_makes_the_grants_stale() {
    let t = tree();
    let first = t.libdir.join("first");
    fs::create_dir(&first).unwrap();
    let passed = first.join("libc.so.6");
    fs::write(&passed, tiny_elf32(3)).unwrap();
    let local = copy_lib("libc.so.6", &t.libdir);
    let runpath = format!("{}:{}", first.display(), t.libdir.display());
    crate::test_files::settle_stamps();
    let files = resolve(&t, &exe_info(&["libc.so.6"], None, Some(&runpath))).unwrap();
    assert_eq!(found(&files, "libc.so.6"), local, "the 32-bit file is passed over");
    let grants = ImageGrants::of(files);
    assert!(!grants.stale());
    fs::write(&passed, fs::read(&local).unwrap()).unwrap();
    assert!(grants.stale(), "rewritten in place into one the loader takes");
}

/// A name that opens as nothing, a link to a file not there yet, comes to open as a
/// library when the file is made elsewhere: no entry of the place searched changes, so
/// the link is stamped itself.
#[test]
fn a_dangling_link_where_the_loader_looks_first_makes_the_grants_stale_once_it_leads_somewhere() {
    let t = tree();
    let first = t.libdir.join("first");
    let elsewhere = t.libdir.join("elsewhere");
    fs::create_dir(&first).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("libc.so.6"), first.join("libc.so.6")).unwrap();
    let local = copy_lib("libc.so.6", &t.libdir);
    let runpath = format!("{}:{}", first.display(), t.libdir.display());
    crate::test_files::settle_stamps();
    let files = resolve(&t, &exe_info(&["libc.so.6"], None, Some(&runpath))).unwrap();
    assert_eq!(found(&files, "libc.so.6"), local, "the dangling link is passed over");
    let grants = ImageGrants::of(files);
    assert!(!grants.stale());
    fs::copy(&local, elsewhere.join("libc.so.6")).unwrap();
    assert!(grants.stale(), "the link now leads to a library the loader opens");
}

/// A place changed just before the resolution looked at it could change again within
/// the same clock tick with its stamp unchanged: such a stamp is not trusted, and the
/// next start looks again.
#[test]
fn a_place_changed_as_the_resolution_looks_is_looked_at_again() {
    use libraries::Seen;
    let t = tree();
    let first = t.libdir.join("first");
    fs::create_dir(&first).unwrap();
    copy_lib("libc.so.6", &t.libdir);
    let runpath = format!("{}:{}", first.display(), t.libdir.display());
    let info = exe_info(&["libc.so.6"], None, Some(&runpath));
    for attempt in 0.. {
        crate::test_files::settle_stamps();
        let changed = std::time::Instant::now();
        fs::write(first.join(format!("unrelated-{attempt}")), "changes the place now").unwrap();
        let held_off = changed.elapsed() > libraries::RACY_MARGIN / 4;
        let files = resolve(&t, &info).unwrap();
        // A test thread held off between the change and the look proves nothing: again.
        if held_off {
            assert!(attempt < 20, "held off between a write and the next call 20 times");
            continue;
        }
        let untrusted: Vec<&PathBuf> =
            files.stamps.iter().filter(|(_, s)| *s == Seen::Untrusted).map(|(p, _)| p).collect();
        assert_eq!(untrusted, [&first], "only the place just changed");
        let grants = ImageGrants::of(files);
        assert!(grants.stale(), "the next start looks again");
        break;
    }
    crate::test_files::settle_stamps();
    let again = resolve(&t, &info).unwrap();
    assert!(again.stamps.iter().all(|(_, s)| *s != Seen::Untrusted), "{:?}", again.stamps);
    let grants = ImageGrants::of(again);
    assert!(!grants.stale(), "looked at once the tick has passed, it is trusted");
}

/// A library found just after it changed is untrusted, not taken for nothing there:
/// removed before the next start, it leaves the grants stale (the loader would go on to
/// places the resolution never looked at), as it did before stamps could be untrusted.
#[test]
fn a_library_found_as_it_changed_then_removed_leaves_the_grants_stale() {
    let t = tree();
    let info = exe_info(&["libc.so.6"], None, Some(t.libdir.to_str().unwrap()));
    for attempt in 0.. {
        let changed = std::time::Instant::now();
        let local = copy_lib("libc.so.6", &t.libdir);
        let held_off = changed.elapsed() > libraries::RACY_MARGIN / 4;
        let files = resolve(&t, &info).unwrap();
        if held_off {
            assert!(attempt < 20, "held off between a copy and the next call 20 times");
            continue;
        }
        assert_eq!(found(&files, "libc.so.6"), local);
        assert!(files.stamps.contains(&(local.clone(), libraries::Seen::Untrusted)), "{:?}", files.stamps);
        let grants = ImageGrants::of(files);
        fs::remove_file(&local).unwrap();
        assert!(grants.stale(), "the library found is gone");
        break;
    }
}

/// The places searched first are stamped as they are, so an unchanged host keeps a real
/// binary's grants fresh: a start re-resolves only when something the loader would see
/// has changed.
#[test]
fn a_real_binarys_grants_stay_fresh_while_nothing_the_loader_sees_changes() {
    let files = resolve_file("ls", Path::new("/bin/ls"));
    let stamped: BTreeSet<&PathBuf> =
        files.stamps.iter().filter(|(_, s)| matches!(s, libraries::Seen::File(_))).map(|(p, _)| p).collect();
    let opened = files.interpreter.iter().chain(&files.libraries).map(|o| &o.path);
    let cache = SearchConfig::host().ld_so_cache.filter(|c| c.is_file());
    for path in opened.chain(cache.as_ref()) {
        assert!(stamped.contains(path), "{} opened by the loader is stamped: {:?}", path.display(), files.stamps);
    }
    let grants = ImageGrants::of(files);
    assert!(!grants.stale());
}
