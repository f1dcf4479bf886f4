//! The files the dynamic loader opens to start a plugin: its program interpreter and its
//! DT_NEEDED libraries, resolved recursively as glibc's ld.so resolves them. The sandbox
//! grants Landlock read+execute on exactly this set.
//!
//! Search order per needed name (glibc `_dl_map_object`): a name containing `/` is used as
//! is; otherwise DT_RPATH of the requiring object and then of each object up its loader
//! chain (only when the requiring object has no DT_RUNPATH), then the requiring object's
//! DT_RUNPATH, then the ld.so.conf directories (what ld.so.cache indexes), then the default
//! directories, the last two skipped for objects marked DF_1_NODEFLIB. Every directory is
//! tried with the host's hwcaps subdirectories first. Files of another ELF class or machine
//! are skipped, as ld.so skips them. LD_LIBRARY_PATH is not modelled: the supervisor starts
//! plugins with a clean environment.
//!
//! Under Landlock, a candidate the loader may try but that is not granted fails with EACCES,
//! on which ld.so moves on to the next directory; so granting the files resolved here also
//! makes the sandboxed loader land on them. Relative search directories (which depend on the
//! plugin's working directory) are skipped for the same reason.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::dst::{expand_dst, uses_origin};
use super::elf::{self, DEFAULT_MAX_FILE_SIZE, ElfInfo};
use super::elf_error::ElfError;
use super::ldconfig;
pub use super::library_error::{Exposure, LibraryError};
use super::loader_caps::LoaderCaps;
use super::loader_host;
use super::machine::Machine;
use super::owners::{Checker, Owners, Use};
pub use super::stamp::{FileStamp, Seen};
use super::subject::Subject;

pub const DEFAULT_LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// Where and how to search; [`SearchConfig::host`] describes this machine's loader.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// ld.so.conf to read for the cache's directories; `None` searches no conf directories.
    pub ld_so_conf: Option<PathBuf>,
    /// The cache file ld.so reads first; granted too, so the sandboxed loader can use it.
    pub ld_so_cache: Option<PathBuf>,
    pub default_dirs: Vec<PathBuf>,
    /// Subdirectories tried inside every directory, best first, ending with "" (the dir).
    pub subdirs: Vec<PathBuf>,
    /// Expansion of `$LIB`.
    pub dst_lib: String,
    /// Expansion of `$PLATFORM`; entries using it are dropped when unknown, as ld.so does.
    pub dst_platform: Option<String>,
    pub max_file_size: u64,
    /// Bounds the work a hostile dependency graph can cause.
    pub max_objects: usize,
    /// Who besides root may write what the loader opens or searches first; `None` checks
    /// nothing (for reading a tree no plugin runs from).
    pub owners: Option<Owners>,
}

impl SearchConfig {
    pub fn host() -> Self {
        Self::for_loader(&LoaderCaps::host())
    }

    /// This machine's directories and files, searched as a loader on a CPU with `caps`
    /// searches them.
    pub fn for_loader(caps: &LoaderCaps) -> Self {
        Self {
            ld_so_conf: Some(PathBuf::from(ldconfig::DEFAULT_LD_SO_CONF)),
            ld_so_cache: Some(PathBuf::from(DEFAULT_LD_SO_CACHE)),
            default_dirs: loader_host::default_dirs(),
            subdirs: caps.search_subdirs(),
            dst_lib: loader_host::dst_lib(),
            dst_platform: caps.platform(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_objects: 4096,
            owners: Some(Owners::this_process()),
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self::host()
    }
}

/// One file the loader maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedObject {
    /// The DT_NEEDED name (or, for the interpreter, the PT_INTERP path) that asked for it.
    pub name: OsString,
    pub required_by: PathBuf,
    /// The path the loader opens.
    pub path: PathBuf,
    /// Symlinks resolved; Landlock rules attach to this inode.
    pub canonical: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoaderFiles {
    pub interpreter: Option<LoadedObject>,
    /// In the loader's breadth-first order.
    pub libraries: Vec<LoadedObject>,
    pub ld_so_cache: Option<PathBuf>,
    /// Each path the loader opens (symlinks not resolved), each place it searches before
    /// the one it finds a library in (the directory, or its missing ancestor) and each
    /// entry it passes over there, and what was there when this resolution looked: a
    /// later start can tell whether the loader would still open the files found, and
    /// only them.
    pub stamps: Vec<(PathBuf, Seen)>,
}

impl LoaderFiles {
    /// Every canonical path to grant read+execute on. Empty for a static binary.
    pub fn paths(&self) -> BTreeSet<PathBuf> {
        self.interpreter
            .iter()
            .chain(&self.libraries)
            .map(|o| o.canonical.clone())
            .chain(self.ld_so_cache.clone())
            .collect()
    }
}

/// Opens and inspects the binary at `subject.path`, then resolves its loader files.
///
/// For command-line use; the supervisor resolves from the `ElfInfo` of the file it verified.
pub fn resolve_path(subject: &Subject, config: &SearchConfig) -> Result<LoaderFiles, LibraryError> {
    let file = open_candidate(&subject.path).map_err(|source| LibraryError::Io {
        subject: subject.clone(),
        path: subject.path.clone(),
        source,
    })?;
    let info = elf::inspect(subject, &file, config.max_file_size).map_err(|source| LibraryError::Unusable {
        name: subject.path.clone().into_os_string(),
        required_by: subject.path.clone(),
        source: Box::new(source),
    })?;
    resolve(subject, &info, config)
}

/// Resolves the loader files of the executable `exe`, found at `subject.path` and run
/// from there.
pub fn resolve(subject: &Subject, exe: &ElfInfo, config: &SearchConfig) -> Result<LoaderFiles, LibraryError> {
    if exe.interpreter.is_none() {
        return Ok(LoaderFiles::default());
    }
    // ld.so takes the executable's $ORIGIN from /proc/self/exe, which is canonical.
    let canonical = canonicalize(subject, &subject.path)?;
    let origin = canonical.parent().unwrap_or(Path::new("/")).to_path_buf();
    resolve_from(subject, exe, config, &origin)
}

/// `$ORIGIN` of an executable run from a sealed image, as ld.so computes it: the
/// directory part of `/proc/self/exe`, which for a memfd reads `/memfd:<name> (deleted)`.
/// Plugin names have no `/`, so it is the root, whatever directory the binary came from.
pub const SEALED_IMAGE_ORIGIN: &str = "/";

/// Resolves the loader files of the executable `exe` (read from `subject.path`) as ld.so
/// finds them when it runs from a sealed image, as every plugin does.
///
/// There `$ORIGIN` is [`SEALED_IMAGE_ORIGIN`], not the binary's directory, and the files
/// are resolved with it, as the loader finds them. An executable building on `$ORIGIN`
/// surely meant the libraries next to it: where what the loader finds from the sealed
/// image is not what it finds run from the binary's directory (one bundled there would be
/// replaced by the system's copy, or not found at all), it is refused naming the entry,
/// rather than run against other libraries or left to fail at start. A RUNPATH of
/// `$ORIGIN/lib` that no library comes from costs nothing.
pub fn resolve_sealed(subject: &Subject, exe: &ElfInfo, config: &SearchConfig) -> Result<LoaderFiles, LibraryError> {
    if exe.interpreter.is_none() {
        return Ok(LoaderFiles::default());
    }
    let sealed = resolve_from(subject, exe, config, Path::new(SEALED_IMAGE_ORIGIN));
    let Some((tag, entry)) = origin_entry(exe) else { return sealed };
    // What the loader would find beside the binary is only compared, never opened: who
    // may write it does not matter (a bundle a user owns is still a bundle to refuse).
    let beside = SearchConfig { owners: None, ..config.clone() };
    match (sealed, resolve(subject, exe, &beside)) {
        (Ok(sealed), Ok(beside)) if sealed.paths() == beside.paths() => Ok(sealed),
        // Nothing next to the binary either: what the loader finds is all there is.
        (Ok(sealed), Err(_)) => Ok(sealed),
        // Found neither way: that library's own error, naming it and where it was sought.
        (Err(e), Err(_)) => Err(e),
        // What the sealed image loads could be changed by a plugin: that is the refusal,
        // whatever lies beside the binary.
        (Err(e @ LibraryError::Writable { .. }), Ok(_)) => Err(e),
        (Ok(_) | Err(_), Ok(_)) => Err(LibraryError::OriginOfSealedImage { subject: subject.clone(), tag, entry }),
    }
}

/// The executable's first search entry or needed name that builds on `$ORIGIN`, with the
/// tag it is in.
fn origin_entry(exe: &ElfInfo) -> Option<(&'static str, String)> {
    // The list ld.so uses: DT_RPATH is ignored when DT_RUNPATH is present.
    let list = match (&exe.runpath, &exe.rpath) {
        (Some(runpath), _) => Some(("DT_RUNPATH", runpath)),
        (None, Some(rpath)) => Some(("DT_RPATH", rpath)),
        (None, None) => None,
    };
    let search = list.into_iter().flat_map(|(tag, list)| list.as_bytes().split(|&b| b == b':').map(move |e| (tag, e)));
    let needed = exe.needed.iter().map(|name| ("DT_NEEDED", name.as_bytes()));
    search
        .chain(needed)
        .find(|(_, entry)| uses_origin(entry))
        .map(|(tag, entry)| (tag, String::from_utf8_lossy(entry).into_owned()))
}

/// Resolves the loader files of `exe`, whose `$ORIGIN` is `origin`.
fn resolve_from(
    subject: &Subject,
    exe: &ElfInfo,
    config: &SearchConfig,
    origin: &Path,
) -> Result<LoaderFiles, LibraryError> {
    let Some(interp) = &exe.interpreter else {
        return Ok(LoaderFiles::default());
    };
    let mut resolver = Resolver::new(subject, exe, config, origin);
    let interpreter = resolver.load_interpreter(interp)?;
    let mut queue = VecDeque::from([0usize]);
    while let Some(index) = queue.pop_front() {
        let needed = resolver.objects.get(index).map(|o| o.info.needed.clone()).unwrap_or_default();
        for name in needed {
            if let Some(new_index) = resolver.load_needed(index, &name)? {
                queue.push_back(new_index);
            }
        }
    }
    let ld_so_cache = config.ld_so_cache.as_ref().filter(|p| p.is_file());
    if let Some(cache) = ld_so_cache {
        resolver.check(cache, Use::Opened, cache.as_os_str(), &interpreter.path)?;
    }
    let mut stamps = std::mem::take(&mut resolver.stamps);
    // A stamp taken within the clock's reach of a change could miss one made after it
    // in the same tick: untrusted, it makes the next start look again.
    let ended = std::time::SystemTime::now();
    let since = resolver.started.min(ended) - RACY_MARGIN;
    for (_, seen) in &mut stamps {
        if matches!(seen, Seen::File(stamp) if stamp.racy(since, ended + RACY_MARGIN)) {
            *seen = Seen::Untrusted;
        }
    }
    Ok(LoaderFiles {
        interpreter: Some(interpreter),
        libraries: resolver.libraries,
        ld_so_cache: ld_so_cache.and_then(|p| fs::canonicalize(p).ok()),
        stamps,
    })
}

/// How far before a resolution's start, and after its end, a change counts as possibly
/// within the tick of a stamp it takes (see [`FileStamp::racy`]): a tick is at most
/// 10 ms (filesystems dating changes by the second are judged by the second).
pub(crate) const RACY_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// One candidate path, as ld.so would take it.
enum Tried {
    Found(ElfInfo, FileStamp),
    /// The open found nothing (`NotFound`, `NotADirectory`) or was refused, or what it
    /// opened could not be stat'ed.
    Absent(io::ErrorKind),
    /// Something ld.so moves on from, as it was.
    Passed(FileStamp),
}

/// An object in the loader's link map.
struct Object {
    path: PathBuf,
    /// What `$ORIGIN` expands to in this object's entries.
    origin: PathBuf,
    info: ElfInfo,
    loader: Option<usize>,
    rpath_dirs: Vec<PathBuf>,
    runpath_dirs: Vec<PathBuf>,
}

struct Resolver<'a> {
    subject: &'a Subject,
    config: &'a SearchConfig,
    machine: Machine,
    conf_dirs: Vec<PathBuf>,
    objects: Vec<Object>,
    /// Names already satisfied: DT_NEEDED strings used, SONAMEs and paths of loaded objects.
    names: HashSet<OsString>,
    canonicals: HashSet<PathBuf>,
    libraries: Vec<LoadedObject>,
    /// What each file loaded was as it was read, by the path it was opened by; and what
    /// was at each place searched before (see [`LoaderFiles::stamps`]).
    stamps: Vec<(PathBuf, Seen)>,
    /// The places searched first, and the paths stamped for them (a missing ancestor's).
    places: HashSet<PathBuf>,
    /// When the resolution began: a stamp of a change since may be racy.
    started: std::time::SystemTime,
    /// What a plugin's id could change among the files and directories the loader uses.
    checker: Option<Checker>,
}

impl<'a> Resolver<'a> {
    fn new(subject: &'a Subject, exe: &ElfInfo, config: &'a SearchConfig, origin: &Path) -> Self {
        let started = std::time::SystemTime::now();
        // The loader cache, stamped before the configuration its directories stand for is
        // read (`ldconfig` between the two would leave a new cache stamped over the old
        // directories); stamped even where there is none, since one made later is opened.
        let stamps = config.ld_so_cache.as_ref().map(|cache| (cache.clone(), Seen::now(cache))).into_iter().collect();
        let conf_dirs = config.ld_so_conf.as_deref().map(ldconfig::read_dirs).unwrap_or_default();
        let mut resolver = Self {
            started,
            subject,
            config,
            machine: exe.machine,
            conf_dirs,
            objects: Vec::new(),
            names: HashSet::new(),
            canonicals: HashSet::new(),
            libraries: Vec::new(),
            stamps,
            places: HashSet::new(),
            checker: config.owners.map(Checker::new),
        };
        let main = resolver.object(subject.path.clone(), origin, exe.clone(), None);
        resolver.objects.push(main);
        resolver
    }

    fn load_interpreter(&mut self, interp: &Path) -> Result<LoadedObject, LibraryError> {
        if !interp.is_absolute() {
            return Err(LibraryError::RelativeInterpreter {
                subject: self.subject.clone(),
                interpreter: interp.to_path_buf(),
            });
        }
        let missing = |source| LibraryError::InterpreterMissing {
            subject: self.subject.clone(),
            interpreter: interp.to_path_buf(),
            source,
        };
        let file = open_candidate(interp).map_err(missing)?;
        let canonical = fs::canonicalize(interp).map_err(missing)?;
        let unusable = |source| LibraryError::Unusable {
            name: interp.as_os_str().to_owned(),
            required_by: self.subject.path.clone(),
            source: Box::new(source),
        };
        let lib_subject = self.subject.with_path(interp);
        let header = elf::read_header(&lib_subject, &file, self.config.max_file_size).map_err(unusable)?;
        if header.machine != self.machine {
            return Err(unusable(ElfError::MachineMismatch {
                subject: lib_subject,
                found: header.machine.name(),
                host: self.machine.name(),
            }));
        }
        let info = header.read_details(&lib_subject, &file).map_err(unusable)?;
        let stamp = file.metadata().map(|m| FileStamp::of(&m)).map_err(missing)?;
        self.stamps.push((interp.to_path_buf(), Seen::File(stamp)));
        let required_by = self.subject.path.clone();
        self.check(interp, Use::Opened, interp.as_os_str(), &required_by)?;
        self.names.insert(interp.as_os_str().to_owned());
        self.names.extend(info.soname.clone());
        self.canonicals.insert(canonical.clone());
        Ok(LoadedObject {
            name: interp.as_os_str().to_owned(),
            required_by: self.subject.path.clone(),
            path: interp.to_path_buf(),
            canonical,
        })
    }

    /// Loads `name` for object `index`; returns the new object's index if it was not loaded yet.
    fn load_needed(&mut self, index: usize, raw: &OsStr) -> Result<Option<usize>, LibraryError> {
        let required_by = self.path_of(index);
        // ld.so expands dynamic string tokens in DT_NEEDED too ("$ORIGIN/libx.so" names a
        // file beside the requiring object), before it looks at the name.
        let expanded =
            if raw.as_bytes().contains(&b'$') {
                let origin = self.objects.get(index).map_or_else(|| PathBuf::from("/"), |o| o.origin.clone());
                let lib = &self.config.dst_lib;
                let expanded = expand_dst(raw.as_bytes(), &origin, lib, self.config.dst_platform.as_deref())
                    .ok_or_else(|| LibraryError::Unexpandable {
                        subject: self.subject.clone(),
                        name: raw.to_owned(),
                        required_by: required_by.clone(),
                    })?;
                Some(expanded.into_os_string())
            } else {
                None
            };
        let name = expanded.as_deref().unwrap_or(raw);
        if self.names.contains(name) {
            return Ok(None);
        }
        let (path, (info, stamp)) = if name.as_bytes().contains(&b'/') {
            self.load_by_path(name, &required_by)?
        } else {
            self.search(index, name, &required_by)?
        };
        self.check(&path, Use::Opened, name, &required_by)?;
        let canonical = canonicalize(self.subject, &path)?;
        self.names.insert(name.to_owned());
        self.names.insert(path.as_os_str().to_owned());
        self.names.extend(info.soname.clone());
        // The loader opens this path even where it finds a file already loaded: a later
        // start must see it repointed.
        self.stamps.push((path.clone(), Seen::File(stamp)));
        // The same file under another name is one link-map entry to ld.so (dev/inode match).
        if !self.canonicals.insert(canonical.clone()) {
            return Ok(None);
        }
        if self.objects.len() >= self.config.max_objects {
            return Err(LibraryError::TooMany { subject: self.subject.clone(), limit: self.config.max_objects });
        }
        self.libraries.push(LoadedObject { name: raw.to_owned(), required_by, path: path.clone(), canonical });
        // ld.so computes a library's $ORIGIN from the path it opened, not its real path.
        let origin = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let object = self.object(path, &origin, info, Some(index));
        self.objects.push(object);
        Ok(Some(self.objects.len() - 1))
    }

    fn load_by_path(&self, name: &OsStr, required_by: &Path) -> Result<(PathBuf, (ElfInfo, FileStamp)), LibraryError> {
        let path = PathBuf::from(name);
        if !path.is_absolute() {
            return Err(LibraryError::RelativeName {
                subject: self.subject.clone(),
                name: name.to_owned(),
                required_by: required_by.to_path_buf(),
            });
        }
        match self.try_candidate(&path, name, required_by)? {
            Tried::Found(info, stamp) => Ok((path, (info, stamp))),
            Tried::Absent(_) | Tried::Passed(_) => Err(LibraryError::NotFound {
                subject: self.subject.clone(),
                name: name.to_owned(),
                required_by: required_by.to_path_buf(),
                searched: Vec::new(),
            }),
        }
    }

    fn search(
        &mut self,
        index: usize,
        name: &OsStr,
        required_by: &Path,
    ) -> Result<(PathBuf, (ElfInfo, FileStamp)), LibraryError> {
        let dirs = self.search_dirs(index);
        for dir in &dirs {
            for sub in &self.config.subdirs {
                let place = dir.join(sub);
                // Looked at before the candidate: a file arriving between the two is
                // either used, or a change the next start's look sees.
                let was = self.unstamped(dir, sub);
                let candidate = place.join(name);
                let passed = match self.try_candidate(&candidate, name, required_by)? {
                    Tried::Found(info, stamp) => return Ok((candidate, (info, stamp))),
                    // An entry that opens as nothing (a dangling link, a file the open
                    // is refused) may come to open as a library with no entry of the
                    // place changing: stamped itself, as what it leads to now.
                    Tried::Absent(kind) => fs::symlink_metadata(&candidate).is_ok().then(|| {
                        // What the open saw, for a link: a target arriving since is new.
                        let seen = match kind {
                            io::ErrorKind::PermissionDenied => refused_as(&candidate),
                            _ => Seen::Nothing,
                        };
                        (candidate.clone(), seen)
                    }),
                    Tried::Passed(stamp) => Some((candidate, Seen::File(stamp))),
                };
                // Not here, so far: one planted here would be loaded instead, so it must
                // pass the owners' check now, and make the grants stale when it appears
                // (the place's stamp changes with its entries; an entry passed over,
                // with what it holds).
                self.check(&place, Use::SearchedFirst, name, required_by)?;
                self.places.insert(place);
                if let Some((stamped, stamp)) = was {
                    self.places.insert(stamped.clone());
                    self.stamps.push((stamped, stamp));
                }
                self.stamps.extend(passed);
            }
        }
        Err(LibraryError::NotFound {
            subject: self.subject.clone(),
            name: name.to_owned(),
            required_by: required_by.to_path_buf(),
            searched: dirs,
        })
    }

    fn search_dirs(&self, index: usize) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        let Some(requester) = self.objects.get(index) else {
            return dirs;
        };
        if requester.info.runpath.is_none() {
            let mut current = Some(requester);
            while let Some(object) = current {
                dirs.extend(object.rpath_dirs.iter().cloned());
                current = object.loader.and_then(|i| self.objects.get(i));
            }
        }
        dirs.extend(requester.runpath_dirs.iter().cloned());
        let nodeflib = requester.info.nodeflib;
        let defaults = &self.config.default_dirs;
        dirs.extend(self.conf_dirs.iter().filter(|d| !(nodeflib && defaults.contains(d))).cloned());
        if !nodeflib {
            dirs.extend(defaults.iter().cloned());
        }
        let mut seen = HashSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        dirs
    }

    /// The stamp that tells whether entries were added to `dir`/`sub` since now, unless
    /// one taken already does: the place's own where it exists, else that of its
    /// shallowest missing ancestor below `dir` (or of `dir` itself), which must be made
    /// before anything beneath it. One stamp then stands for every name searched there,
    /// and for the hwcaps and legacy subdirectories a host lacks: a start's look grows
    /// with the places searched, not with each name tried in each (/bin/ls: 17 `stat`s,
    /// against 98 with a stamp a name).
    fn unstamped(&self, dir: &Path, sub: &Path) -> Option<(PathBuf, Seen)> {
        if self.places.contains(&dir.join(sub)) {
            return None;
        }
        let mut place = dir.to_path_buf();
        let mut seen = Seen::now(&place);
        for part in sub.components() {
            if seen == Seen::Nothing {
                break;
            }
            place.push(part);
            seen = Seen::now(&place);
        }
        (!self.places.contains(&place)).then_some((place, seen))
    }

    /// What ld.so makes of `path`: the library to load, nothing there, or a file it
    /// moves on from (another class, not a regular file), with what that file was.
    fn try_candidate(&self, path: &Path, name: &OsStr, required_by: &Path) -> Result<Tried, LibraryError> {
        let file = match open_candidate(path) {
            Ok(file) => file,
            Err(e) if is_absent(&e) => return Ok(Tried::Absent(e.kind())),
            Err(source) => {
                return Err(LibraryError::Io { subject: self.subject.clone(), path: path.to_path_buf(), source });
            }
        };
        let stamp = match file.metadata() {
            Ok(meta) if meta.is_file() => FileStamp::of(&meta),
            Ok(meta) => return Ok(Tried::Passed(FileStamp::of(&meta))),
            Err(e) => return Ok(Tried::Absent(e.kind())),
        };
        let unusable = |source| LibraryError::Unusable {
            name: name.to_owned(),
            required_by: required_by.to_path_buf(),
            source: Box::new(source),
        };
        let lib_subject = self.subject.with_path(path);
        let header = elf::read_header(&lib_subject, &file, self.config.max_file_size).map_err(unusable)?;
        let found = header.machine;
        if found.class != self.machine.class || found.e_machine != self.machine.e_machine {
            return Ok(Tried::Passed(stamp));
        }
        if found.endian != self.machine.endian {
            return Err(unusable(ElfError::EndianMismatch {
                subject: lib_subject,
                found: found.endian,
                host: self.machine.endian,
            }));
        }
        header.read_details(&lib_subject, &file).map(|info| Tried::Found(info, stamp)).map_err(unusable)
    }

    fn object(&self, path: PathBuf, origin: &Path, info: ElfInfo, loader: Option<usize>) -> Object {
        // glibc drops DT_RPATH entirely when DT_RUNPATH is present (get-dynamic-info.h).
        let rpath_dirs = match (&info.rpath, &info.runpath) {
            (Some(rpath), None) => self.expand_list(rpath, origin),
            _ => Vec::new(),
        };
        let runpath_dirs = info.runpath.as_ref().map(|r| self.expand_list(r, origin)).unwrap_or_default();
        Object { path, origin: origin.to_path_buf(), info, loader, rpath_dirs, runpath_dirs }
    }

    fn expand_list(&self, list: &OsStr, origin: &Path) -> Vec<PathBuf> {
        list.as_bytes()
            .split(|&b| b == b':')
            .filter_map(|entry| expand_dst(entry, origin, &self.config.dst_lib, self.config.dst_platform.as_deref()))
            .filter(|p| p.is_absolute())
            .collect()
    }

    /// Refuses `path` (opened, or searched for `name` before where it is found) where an
    /// id other than root's or the supervisor's could change it.
    fn check(&mut self, path: &Path, used: Use, name: &OsStr, required_by: &Path) -> Result<(), LibraryError> {
        let Some(checker) = self.checker.as_mut() else { return Ok(()) };
        let found = match used {
            Use::Opened => checker.opened(path),
            Use::SearchedFirst => checker.searched(path),
        };
        let io = |source| LibraryError::Io { subject: self.subject.clone(), path: path.to_path_buf(), source };
        match found.map_err(io)? {
            None => Ok(()),
            Some(exposed) => Err(LibraryError::Writable {
                subject: self.subject.clone(),
                what: Box::new(Exposure {
                    exposed: exposed.path,
                    writer: exposed.writer,
                    used,
                    path: path.to_path_buf(),
                    name: name.to_owned(),
                    required_by: required_by.to_path_buf(),
                }),
            }),
        }
    }

    fn path_of(&self, index: usize) -> PathBuf {
        self.objects.get(index).map(|o| o.path.clone()).unwrap_or_else(|| self.subject.path.clone())
    }
}

/// What `path` was when an open of it was refused: looked at, opened again (refused
/// again) and looked at again, the two looks agreeing; else untrusted. A single look
/// after the refused open could see a link repointed since to an older file, and take
/// that for what was refused.
fn refused_as(path: &Path) -> Seen {
    let before = Seen::now(path);
    let refused = open_candidate(path).is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied);
    if refused && Seen::now(path) == before { before } else { Seen::Untrusted }
}

/// Opens for reading without blocking on a FIFO and without acquiring a controlling tty.
fn open_candidate(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)
}

fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::PermissionDenied)
}

fn canonicalize(subject: &Subject, path: &Path) -> Result<PathBuf, LibraryError> {
    fs::canonicalize(path).map_err(|source| LibraryError::Io {
        subject: subject.clone(),
        path: path.to_path_buf(),
        source,
    })
}
