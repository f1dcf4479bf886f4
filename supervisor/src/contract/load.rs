//! Turning contract files on disk (`.proto` sources, directories of them, or
//! binary descriptor sets) into a `FileDescriptorSet`.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::FileDescriptorSet;

use super::error::ContractError;

/// Loads one contract: a `.proto` file (compiled with its own directory as the
/// include path), a directory (every `.proto` file beneath it, compiled with
/// the directory as the include path), or anything else as a binary
/// `FileDescriptorSet` (`.binpb`, `.pb`, `.desc`, ...).
pub fn load_contract(path: &Path) -> Result<FileDescriptorSet, ContractError> {
    load_contract_with_includes(path, &[])
}

/// Like [`load_contract`], with extra include directories for imports that
/// live outside the contract's own directory.
pub fn load_contract_with_includes(path: &Path, includes: &[PathBuf]) -> Result<FileDescriptorSet, ContractError> {
    let metadata = fs::metadata(path).map_err(|source| read_error(path, source))?;
    if metadata.is_dir() {
        load_proto_dir(path, includes)
    } else if is_proto_source(path) {
        load_protos(&[path], includes)
    } else {
        decode_file(path)
    }
}

/// Compiles several `.proto` files into one set (imports included). Each
/// file's directory is an include path, after the explicit `includes`, so a
/// file under an explicit include keeps the name its importers use.
pub fn load_protos<P: AsRef<Path>>(paths: &[P], includes: &[PathBuf]) -> Result<FileDescriptorSet, ContractError> {
    let mut include_dirs = canonical_all(includes)?;
    for path in paths {
        let path = path.as_ref();
        let canonical = canonical(path)?;
        if let Some(parent) = canonical.parent() {
            include_dirs.push(parent.to_path_buf());
        }
    }
    let paths: Vec<&Path> = paths.iter().map(AsRef::as_ref).collect();
    compile(&paths, &include_dirs)
}

fn load_proto_dir(dir: &Path, includes: &[PathBuf]) -> Result<FileDescriptorSet, ContractError> {
    let files = proto_files_under(dir)?;
    if files.is_empty() {
        return Err(ContractError::NoProtoFiles { path: dir.to_path_buf() });
    }
    let mut include_dirs = vec![canonical(dir)?];
    include_dirs.extend(canonical_all(includes)?);
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    compile(&files, &include_dirs)
}

fn compile(paths: &[&Path], include_dirs: &[PathBuf]) -> Result<FileDescriptorSet, ContractError> {
    if paths.is_empty() {
        return Err(ContractError::NoInputs);
    }
    let mut resolver = protox::file::ChainFileResolver::new();
    for dir in include_dirs {
        resolver.add(RegularFiles::new(dir.clone()));
    }
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true).include_source_info(false);
    for path in paths {
        // protox maps a path to a file name by stripping an include prefix;
        // canonical forms on both sides make that work for relative inputs.
        let canonical = canonical(path)?;
        compiler.open_file(&canonical).map_err(|source| compile_error(path, source))?;
    }
    Ok(compiler.file_descriptor_set())
}

/// An include directory whose files protox reads only when they are regular files. It
/// opens them blocking, so a FIFO at a contract's path (or an import's) waited for a
/// writer for ever, holding check-config, the daemon's start or a reload; protox's own
/// `IncludeFileResolver` does the rest. (The kind is read through a non-blocking open of
/// the same path just before: these are the operator's files, and a path swapped in
/// between is a misconfiguration to report, not a boundary to defend.)
struct RegularFiles {
    dir: PathBuf,
    include: protox::file::IncludeFileResolver,
}

impl RegularFiles {
    fn new(dir: PathBuf) -> Self {
        Self { include: protox::file::IncludeFileResolver::new(dir.clone()), dir }
    }
}

/// A contract file that is not a regular file (a FIFO, a device, a socket).
#[derive(Debug, thiserror::Error)]
#[error("{}: not a regular file", path.display())]
struct NotRegular {
    path: PathBuf,
}

impl protox::file::FileResolver for RegularFiles {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.include.resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        let path = self.dir.join(name);
        let opened = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path);
        if let Ok(meta) = opened.and_then(|f| f.metadata())
            && !meta.is_file()
            && !meta.is_dir()
        {
            return Err(protox::Error::new(NotRegular { path }));
        }
        // Not found, unreadable, a directory: protox's own resolver says so its way.
        self.include.open_file(name)
    }
}

/// Far above any real contract (a large API's descriptor set is a few MiB),
/// far below memory: `contract = ["/dev/zero"]` must fail, not exhaust it.
pub const MAX_DESCRIPTOR_SET_FILE: u64 = 64 * 1024 * 1024;

fn decode_file(path: &Path) -> Result<FileDescriptorSet, ContractError> {
    // O_NONBLOCK: opening a FIFO planted at the path must not wait for a writer.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| read_error(path, source))?;
    let metadata = file.metadata().map_err(|source| read_error(path, source))?;
    if !metadata.is_file() {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
        return Err(read_error(path, source));
    }
    let mut bytes = Vec::new();
    file.take(MAX_DESCRIPTOR_SET_FILE + 1).read_to_end(&mut bytes).map_err(|source| read_error(path, source))?;
    if bytes.len() as u64 > MAX_DESCRIPTOR_SET_FILE {
        let source = std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than the {MAX_DESCRIPTOR_SET_FILE}-byte limit for a descriptor set"),
        );
        return Err(read_error(path, source));
    }
    FileDescriptorSet::decode(bytes.as_slice())
        .map_err(|source| ContractError::Decode { path: path.to_path_buf(), source })
}

/// Sorted so that compilation order, and therefore error messages, do not
/// depend on the file system's directory order.
fn proto_files_under(dir: &Path) -> Result<Vec<PathBuf>, ContractError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = fs::read_dir(&current).map_err(|source| read_error(&current, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| read_error(&current, source))?;
            let path = entry.path();
            // `file_type` does not follow symlinks, so a link cycle cannot loop us.
            let file_type = entry.file_type().map_err(|source| read_error(&path, source))?;
            if file_type.is_dir() {
                pending.push(path);
            } else if is_proto_source(&path) && path.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_proto_source(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("proto"))
}

fn canonical(path: &Path) -> Result<PathBuf, ContractError> {
    fs::canonicalize(path).map_err(|source| read_error(path, source))
}

fn canonical_all(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ContractError> {
    paths.iter().map(|path| canonical(path)).collect()
}

fn read_error(path: &Path, source: std::io::Error) -> ContractError {
    ContractError::Read { path: path.to_path_buf(), source }
}

fn compile_error(path: &Path, source: protox::Error) -> ContractError {
    ContractError::Compile { path: path.to_path_buf(), at: place(&source), source }
}

/// The file, line and column a compile error points at: the file may be an
/// import rather than the contract named on the command line or in the config.
fn place(error: &protox::Error) -> String {
    use miette::Diagnostic;
    let position = error.labels().and_then(|mut labels| labels.next()).and_then(|label| {
        let contents = error.source_code()?.read_span(label.inner(), 0, 0).ok()?;
        Some((contents.line() + 1, contents.column() + 1))
    });
    match (error.file(), position) {
        (Some(file), Some((line, column))) => format!(" (at {file}:{line}:{column})"),
        (Some(file), None) => format!(" (in {file})"),
        (None, _) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `load` on another thread; a load still waiting after a while is released by
    /// opening `fifo` for writing (so the thread ends) and reported.
    fn promptly(
        fifo: &Path,
        load: impl FnOnce() -> Result<FileDescriptorSet, ContractError> + Send + 'static,
    ) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _ = tx.send(load());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(result) => {
                t.join().unwrap();
                result.expect_err("a FIFO is no contract").to_string()
            }
            Err(_) => {
                let _ = fs::OpenOptions::new().write(true).open(fifo);
                t.join().unwrap();
                panic!("the load waited on the FIFO {}", fifo.display());
            }
        }
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path in the test's temporary directory.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// protox opens a .proto blocking: a FIFO at a contract's path, or at an import's,
    /// held check-config, the daemon's start or a reload until a writer came.
    #[test]
    fn a_proto_or_an_import_that_is_a_fifo_is_refused_at_once_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let contract = dir.path().join("slow.proto");
        mkfifo(&contract);
        let path = contract.clone();
        let said = promptly(&contract, move || load_protos(&[&path], &[]));
        assert!(said.contains(&format!("{}: not a regular file", contract.display())), "{said}");

        let importer = dir.path().join("a.proto");
        fs::write(&importer, "syntax = \"proto3\";\nimport \"b.proto\";\n").unwrap();
        let import = dir.path().join("b.proto");
        mkfifo(&import);
        let path = importer.clone();
        let said = promptly(&import, move || load_contract(&path));
        assert!(said.contains("not a regular file"), "{said}");
    }
}
