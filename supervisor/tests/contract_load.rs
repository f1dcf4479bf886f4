//! Loading contracts from disk: `.proto` sources, directories, binary
//! descriptor sets, and errors that name the offending path.

use std::fs;
use std::path::Path;

use plugin_supervisor::contract::{
    ContractError, Scope, Side, diff, diff_bytes, load_contract, load_contract_with_includes, load_protos,
};
use prost::Message;
use tempfile::TempDir;

const ECHO: &str = r#"syntax = "proto3";
package echo.v1;

service Echo {
  rpc Say(SayRequest) returns (SayResponse);
}

message SayRequest {
  string text = 1;
}

message SayResponse {
  string text = 1;
}
"#;

fn write(dir: &Path, name: &str, text: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create test directory");
    }
    fs::write(&path, text).expect("write test file");
    path
}

fn tempdir() -> TempDir {
    TempDir::new().expect("create tempdir")
}

fn file_names(set: &prost_types::FileDescriptorSet) -> Vec<&str> {
    set.file.iter().map(|file| file.name()).collect()
}

#[test]
fn a_proto_file_compiles_under_its_own_name() {
    let dir = tempdir();
    let path = write(dir.path(), "echo.proto", ECHO.as_bytes());
    let set = load_contract(&path).expect("load echo.proto");
    assert_eq!(file_names(&set), ["echo.proto"]);
    assert_eq!(set.file[0].service[0].name(), "Echo");
}

#[test]
fn a_binary_descriptor_set_loads_to_the_same_contract() {
    let dir = tempdir();
    let source = write(dir.path(), "echo.proto", ECHO.as_bytes());
    let compiled = load_contract(&source).expect("compile");
    for name in ["echo.binpb", "echo.pb", "echo.desc", "echo.anything"] {
        let binary = write(dir.path(), name, &compiled.encode_to_vec());
        let decoded = load_contract(&binary).expect("decode");
        assert_eq!(decoded, compiled, "{name}");
        assert!(diff(&compiled, &decoded, Scope::All).is_empty());
    }
}

#[test]
fn a_directory_compiles_every_proto_file_with_imports_resolved() {
    let dir = tempdir();
    write(
        dir.path(),
        "echo/v1/types.proto",
        b"syntax = \"proto3\";\npackage echo.v1;\nmessage Ping { string text = 1; }\n",
    );
    write(
        dir.path(),
        "echo/v1/service.proto",
        b"syntax = \"proto3\";\npackage echo.v1;\nimport \"echo/v1/types.proto\";\nservice Echo { rpc Say(Ping) returns (Ping); }\n",
    );
    write(dir.path(), "README.md", b"not a proto file");
    let set = load_contract(dir.path()).expect("load directory");
    let mut names = file_names(&set);
    names.sort_unstable();
    assert_eq!(names, ["echo/v1/service.proto", "echo/v1/types.proto"]);
}

#[test]
fn extra_include_directories_resolve_imports() {
    let dir = tempdir();
    let shared = dir.path().join("shared");
    write(&shared, "common/meta.proto", b"syntax = \"proto3\";\npackage common;\nmessage Meta { string trace = 1; }\n");
    let contract = write(
        &dir.path().join("plugin"),
        "plugin.proto",
        b"syntax = \"proto3\";\npackage plugin;\nimport \"common/meta.proto\";\nmessage Req { common.Meta meta = 1; }\n",
    );
    let without = load_contract(&contract);
    assert!(matches!(without, Err(ContractError::Compile { .. })));
    let set = load_contract_with_includes(&contract, std::slice::from_ref(&shared)).expect("with include");
    let mut names = file_names(&set);
    names.sort_unstable();
    assert_eq!(names, ["common/meta.proto", "plugin.proto"]);
    let several = load_protos(&[&contract], &[shared]).expect("load_protos");
    assert_eq!(several, set);
}

#[test]
fn several_proto_files_compile_into_one_set() {
    let dir = tempdir();
    let one = write(&dir.path().join("a"), "one.proto", b"syntax = \"proto3\";\npackage a;\nmessage One {}\n");
    let two = write(&dir.path().join("b"), "two.proto", b"syntax = \"proto3\";\npackage b;\nmessage Two {}\n");
    let set = load_protos(&[one, two], &[]).expect("two files");
    let mut names = file_names(&set);
    names.sort_unstable();
    assert_eq!(names, ["one.proto", "two.proto"]);
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let dir = tempdir();
    let path = dir.path().join("absent.proto");
    let error = load_contract(&path).expect_err("missing file");
    assert!(matches!(&error, ContractError::Read { path: p, .. } if *p == path));
    assert!(error.to_string().contains("absent.proto"), "{error}");
}

#[test]
fn a_syntax_error_names_the_file_and_protox_cause() {
    let dir = tempdir();
    let path = write(dir.path(), "broken.proto", b"syntax = \"proto3\";\nmessage {\n");
    let error = load_contract(&path).expect_err("broken proto");
    assert!(matches!(error, ContractError::Compile { .. }));
    let text = error.to_string();
    assert!(text.contains("broken.proto"), "{text}");
    assert!(text.contains("cannot compile"), "{text}");
    assert!(text.contains("(at broken.proto:2:9)"), "the line and column of the error: {text}");
}

#[test]
fn an_unresolved_type_is_a_compile_error() {
    let dir = tempdir();
    let path = write(dir.path(), "dangling.proto", b"syntax = \"proto3\";\nmessage A { Missing m = 1; }\n");
    let error = load_contract(&path).expect_err("dangling type");
    assert!(error.to_string().contains("Missing"), "{error}");
}

#[test]
fn garbage_bytes_are_a_decode_error_naming_the_file() {
    let dir = tempdir();
    let path = write(dir.path(), "garbage.binpb", &[0xff, 0xff, 0xff, 0x0f, 0x12]);
    let error = load_contract(&path).expect_err("garbage");
    assert!(matches!(error, ContractError::Decode { .. }));
    assert!(error.to_string().contains("garbage.binpb"), "{error}");
}

#[test]
fn a_device_or_fifo_is_refused_instead_of_read_forever() {
    // `contract = ["/dev/zero"]` once read until memory ran out.
    let error = load_contract(Path::new("/dev/zero")).expect_err("a character device");
    assert!(matches!(&error, ContractError::Read { path, .. } if path == Path::new("/dev/zero")));
    assert!(error.to_string().contains("not a regular file"), "{error}");

    let dir = tempdir();
    let fifo = dir.path().join("contract.binpb");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("no NUL in a temp path");
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let error = load_contract(&fifo).expect_err("a FIFO with no writer");
    assert!(error.to_string().contains("not a regular file"), "{error}");
}

#[test]
fn an_empty_directory_and_an_empty_list_are_refused() {
    let dir = tempdir();
    let error = load_contract(dir.path()).expect_err("empty directory");
    assert!(matches!(error, ContractError::NoProtoFiles { .. }));
    let none: [&Path; 0] = [];
    assert!(matches!(load_protos(&none, &[]), Err(ContractError::NoInputs)));
}

#[test]
fn diff_bytes_names_the_side_that_failed_to_decode() {
    let valid = prost_types::FileDescriptorSet::default().encode_to_vec();
    let garbage = [0x0a, 0xff];
    assert!(matches!(diff_bytes(&garbage, &valid), Err(ContractError::DecodeBytes { side: Side::Old, .. })));
    assert!(matches!(diff_bytes(&valid, &garbage), Err(ContractError::DecodeBytes { side: Side::New, .. })));
    assert!(diff_bytes(&valid, &valid).is_ok_and(|report| report.is_empty()));
}

#[test]
fn errors_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<ContractError>();
}
