//! Signatures bind a plugin's name, version and exact bytes to a trusted key.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::support::{keypair, small_system_binary, write_exe};
use crate::integrity::message::{DOMAIN, signed_message};
use crate::integrity::{
    DEFAULT_MAX_FILE_SIZE, IntegrityError, KeyError, Policy, PublicKey, SecretKey, Sha256Digest, SignError,
    SignatureError, SignatureFile, VerifiedBinary, generate_keypair, read_public_key_file, sign, sign_binary,
};

fn policy<'a>(trusted: &'a [PublicKey], version: Option<&'a str>) -> Policy<'a> {
    Policy { require_signature: true, trusted_keys: trusted, expected_version: version, ..Policy::default() }
}

fn signature_error(result: Result<VerifiedBinary, IntegrityError>) -> SignatureError {
    match result {
        Err(IntegrityError::Signature(e)) => e,
        other => panic!("expected a signature error, got {other:?}"),
    }
}

#[test]
fn keygen_writes_a_private_secret_key_and_a_pasteable_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    let key = generate_keypair(&secret, &public).unwrap();

    assert_eq!(fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    let line = fs::read_to_string(&public).unwrap();
    assert_eq!(line, format!("{key}\n"));
    assert!(line.starts_with("ed25519:") && line.trim().len() == "ed25519:".len() + 64);
    assert_eq!(read_public_key_file(&public).unwrap(), key);
    assert_eq!(SecretKey::load(&secret).unwrap().public_key(), key);
    assert_eq!(key.key_id().to_string().len(), 16);

    let config: toml::Table = toml::from_str(&format!("trusted_keys = [\"{key}\"]")).unwrap();
    #[derive(serde::Deserialize)]
    struct Config {
        trusted_keys: Vec<PublicKey>,
    }
    let parsed: Config = config.try_into().unwrap();
    assert_eq!(parsed.trusted_keys, [key]);
}

#[test]
fn keygen_refuses_to_overwrite_either_file() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    generate_keypair(&secret, &public).unwrap();
    let before = fs::read(&secret).unwrap();
    assert!(matches!(generate_keypair(&secret, &dir.path().join("new.pub")), Err(KeyError::Exists { .. })));
    assert!(matches!(generate_keypair(&dir.path().join("new.key"), &public), Err(KeyError::Exists { .. })));
    // One path for both is said as such, not as a key that exists (nothing does), and
    // nothing is written.
    let one = dir.path().join("one");
    let e = generate_keypair(&one, &dir.path().join(".").join("one")).unwrap_err();
    assert!(matches!(&e, KeyError::SamePath { path } if path.ends_with("one")), "{e:?}");
    assert!(e.to_string().ends_with("is given for both the secret and the public key; give each its own file"), "{e}");
    assert!(!one.exists());
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    let e = generate_keypair(&sub.join("..").join("one"), &one).unwrap_err();
    assert!(matches!(e, KeyError::SamePath { .. }), "{e:?}");
    assert!(!one.exists());
    assert_eq!(fs::read(&secret).unwrap(), before);
    assert!(!dir.path().join("new.key").exists(), "nothing is left behind on refusal");
}

#[test]
fn a_secret_key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "k");
    fs::set_permissions(&keys.secret, fs::Permissions::from_mode(0o644)).unwrap();
    let err = SecretKey::load(&keys.secret).unwrap_err();
    assert!(matches!(err, KeyError::InsecurePermissions { mode: 0o644, .. }), "{err:?}");
}

#[test]
fn the_signed_message_is_domain_separated_and_unambiguous() {
    let digest = Sha256Digest::of_bytes(b"plugin");
    let message = signed_message("echo", "1.2.0", &digest).unwrap();
    assert_eq!(String::from_utf8(message).unwrap(), format!("plugin-supervisor signature v1\necho\n1.2.0\n{digest}\n"));
    assert!(DOMAIN.ends_with('\n'));
    assert!(signed_message("a\n1", "b", &digest).is_err(), "newlines would make fields ambiguous");
    assert!(signed_message("", "1", &digest).is_err());
}

#[test]
fn a_signed_binary_verifies_and_reports_what_was_signed() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    let (sig, sig_path) = sign_binary(&binary, &keys.secret, "echo", "1.2.0").unwrap();
    assert_eq!(sig_path, dir.path().join("echo.sig"));

    let trusted = [keys.public.clone()];
    let verified = VerifiedBinary::open("echo", &binary, &policy(&trusted, Some("1.2.0"))).unwrap();
    let got = verified.signature().unwrap();
    assert_eq!(got.name, "echo");
    assert_eq!(got.version, "1.2.0");
    assert_eq!(got.key_id, keys.public.key_id());
    assert_eq!(got.sha256, *verified.digest());
    assert_eq!(sig.sha256, *verified.digest());

    // Without a pinned version the signed one is reported for the handshake to compare.
    let verified = VerifiedBinary::open("echo", &binary, &policy(&trusted, None)).unwrap();
    assert_eq!(verified.signature().unwrap().version, "1.2.0");
}

#[test]
fn signing_refuses_what_could_never_be_a_plugin_binary_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    // A FIFO (opening it waited for a writer forever), /dev/zero (hashing it never
    // ended), a directory (read failed late with EISDIR), a socket (ENXIO).
    let (paths, _listening) = crate::test_files::not_regular(dir.path());
    for (path, kind) in paths {
        let (owned, secret) = (path.clone(), keys.secret.clone());
        match crate::test_files::within_10s(&path, move || sign_binary(&owned, &secret, "echo", "1.0.0")) {
            Err(e @ SignError::NotRegularFile { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&format!("is a {kind}, not a regular file")), "{path:?}: {text}");
            }
            other => panic!("{path:?}: expected NotRegularFile, got {other:?}"),
        }
    }
    assert!(!dir.path().join("fifo.sig").exists(), "nothing is signed");
    // A file larger than the supervisor runs is refused before it is read.
    let big = dir.path().join("big");
    fs::File::create(&big).unwrap().set_len(DEFAULT_MAX_FILE_SIZE + 1).unwrap();
    match sign_binary(&big, &keys.secret, "echo", "1.0.0") {
        Err(SignError::TooLarge { size, limit, .. }) => {
            assert_eq!((size, limit), (DEFAULT_MAX_FILE_SIZE + 1, DEFAULT_MAX_FILE_SIZE))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn a_signature_file_that_is_not_a_regular_file_is_refused_at_once_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO (opening it waited for a writer forever), /dev/zero (read up to the bound,
    // then called unparsable), a directory, a socket.
    let (paths, _listening) = crate::test_files::not_regular(dir.path());
    for (path, kind) in paths {
        let owned = path.clone();
        match crate::test_files::within_10s(&path, move || SignatureFile::load("echo", &owned)) {
            Err(e @ SignatureError::NotRegularFile { .. }) => assert_eq!(
                e.to_string(),
                format!("plugin \"echo\": signature file {} is a {kind}, not a regular file", path.display())
            ),
            other => panic!("{path:?}: expected NotRegularFile, got {other:?}"),
        }
    }
    // The same through a start's verification: a FIFO planted beside the binary.
    let keys = keypair(dir.path(), "release");
    let trusted = [keys.public];
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    let sig = SignatureFile::path_for(&binary);
    let c = std::ffi::CString::new(sig.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path in the test's temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let owned = binary.clone();
    let opened =
        crate::test_files::within_10s(&sig, move || VerifiedBinary::open("echo", &owned, &policy(&trusted, None)));
    match signature_error(opened) {
        e @ SignatureError::NotRegularFile { .. } => {
            assert_eq!(
                e.to_string(),
                format!("plugin \"echo\": signature file {} is a FIFO, not a regular file", sig.display())
            )
        }
        other => panic!("expected NotRegularFile, got {other:?}"),
    }
}

#[test]
fn sign_from_an_open_file_matches_sign_from_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    let file = fs::File::open(&binary).unwrap();
    let from_file = sign(&file, &keys.secret, "echo", "1.0.0").unwrap();
    let (from_path, _) = sign_binary(&binary, &keys.secret, "echo", "1.0.0").unwrap();
    // ed25519 signatures are deterministic.
    assert_eq!(from_file, from_path);
}

#[test]
fn a_tampered_binary_fails_with_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    let (sig, _) = sign_binary(&binary, &keys.secret, "echo", "1.2.0").unwrap();
    let mut bytes = small_system_binary().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    fs::write(&binary, &bytes).unwrap();

    let trusted = [keys.public];
    let err = signature_error(VerifiedBinary::open("echo", &binary, &policy(&trusted, None)));
    let found = Sha256Digest::of_bytes(&bytes);
    assert!(matches!(err, SignatureError::DigestMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "plugin \"echo\": binary sha256 {found} does not match the signed sha256 {} in {}",
            sig.sha256,
            dir.path().join("echo.sig").display()
        )
    );
}

#[test]
fn a_signature_for_another_plugin_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "auth", small_system_binary());
    sign_binary(&binary, &keys.secret, "echo", "1.2.0").unwrap();
    let trusted = [keys.public];
    let err = signature_error(VerifiedBinary::open("auth", &binary, &policy(&trusted, None)));
    assert!(
        matches!(&err, SignatureError::NameMismatch { signed, expected, .. } if signed == "echo" && expected == "auth"),
        "{err:?}"
    );
}

#[test]
fn a_binary_configured_under_another_name_is_held_to_the_name_it_declares() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    sign_binary(&binary, &keys.secret, "echo", "1.2.0").unwrap();
    let trusted = [keys.public];
    let declared = |name| Policy { signed_name: Some(name), ..policy(&trusted, None) };
    let ok = VerifiedBinary::open("echo-eu", &binary, &declared("echo")).unwrap();
    assert_eq!(ok.plugin(), "echo-eu", "reported under the entry's name");
    let err = signature_error(VerifiedBinary::open("echo-eu", &binary, &declared("token-validator")));
    assert!(
        matches!(&err, SignatureError::NameMismatch { signed, expected, .. } if signed == "echo" && expected == "token-validator"),
        "{err:?}"
    );
    assert!(
        err.to_string().ends_with("is for plugin \"echo\", not \"token-validator\" (the entry's declared_name)"),
        "{err}"
    );
}

#[test]
fn a_signature_for_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    sign_binary(&binary, &keys.secret, "echo", "1.2.0").unwrap();
    let trusted = [keys.public];
    let err = signature_error(VerifiedBinary::open("echo", &binary, &policy(&trusted, Some("2.0.0"))));
    assert!(matches!(err, SignatureError::VersionMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("is for version \"1.2.0\", not \"2.0.0\""), "{err}");
}

#[test]
fn a_signature_by_an_untrusted_key_is_refused_with_its_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let signer = keypair(dir.path(), "stranger");
    let trusted_key = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    sign_binary(&binary, &signer.secret, "echo", "1.2.0").unwrap();
    let trusted = [trusted_key.public];
    let err = signature_error(VerifiedBinary::open("echo", &binary, &policy(&trusted, None)));
    assert!(matches!(err, SignatureError::UntrustedKey { .. }), "{err:?}");
    assert!(err.to_string().contains(&signer.public.key_id().to_string()), "{err}");
}

#[test]
fn an_edited_signature_file_is_a_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    let (sig, sig_path) = sign_binary(&binary, &keys.secret, "echo", "1.2.0").unwrap();
    let trusted = [keys.public];

    // Flip one bit of the signature itself.
    let mut forged = sig.clone();
    forged.signature[10] ^= 0x01;
    forged.write(&sig_path).unwrap();
    let err = signature_error(VerifiedBinary::open("echo", &binary, &policy(&trusted, None)));
    assert!(matches!(err, SignatureError::BadSignature { .. }), "{err:?}");

    // Replay: the same valid signature relabelled for another version.
    let mut replayed = sig;
    replayed.version = "9.9.9".to_owned();
    replayed.write(&sig_path).unwrap();
    let err = signature_error(VerifiedBinary::open("echo", &binary, &policy(&trusted, Some("9.9.9"))));
    assert!(matches!(err, SignatureError::BadSignature { .. }), "{err:?}");
}

#[test]
fn an_unparsable_signature_file_reports_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    let (_, sig_path) = sign_binary(&binary, &keys.secret, "echo", "1.2.0").unwrap();
    let text = fs::read_to_string(&sig_path).unwrap();
    let sha_line = text.lines().position(|l| l.starts_with("sha256")).unwrap() + 1;
    fs::write(&sig_path, text.replace("sha256 = \"", "sha256 = \"zz")).unwrap();

    let trusted = [keys.public];
    let err = signature_error(VerifiedBinary::open("echo", &binary, &policy(&trusted, None)));
    match &err {
        SignatureError::Unparsable { line, .. } => assert_eq!(*line, sha_line),
        other => panic!("expected Unparsable, got {other:?}"),
    }
    assert!(err.to_string().contains(&format!("is not valid (line {sha_line}): sha256:")), "{err}");

    fs::write(&sig_path, "format = 1\nthis is not toml\n").unwrap();
    let err = signature_error(VerifiedBinary::open("echo", &binary, &policy(&trusted, None)));
    assert!(matches!(err, SignatureError::Unparsable { line: 2, .. }), "{err:?}");
}

#[test]
fn a_missing_signature_file_is_refused_when_required_and_ignored_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "release");
    let binary = write_exe(dir.path(), "echo", small_system_binary());
    let trusted = [keys.public];
    let err = signature_error(VerifiedBinary::open("echo", &binary, &policy(&trusted, None)));
    assert!(matches!(err, SignatureError::Missing { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("plugin \"echo\": signature file {}.sig is missing", binary.display()));
    assert!(VerifiedBinary::open("echo", &binary, &Policy::default()).is_ok());
}

#[test]
fn signature_files_round_trip_and_refuse_other_formats_and_fields() {
    let sig = SignatureFile {
        name: "we\"ird \\ name".to_owned(),
        version: "1.0.0-rc.1+build".to_owned(),
        sha256: Sha256Digest::of_bytes(b"x"),
        key_id: crate::integrity::KeyId([1, 2, 3, 4, 5, 6, 7, 8]),
        signature: [0xab; 64],
    };
    assert_eq!(SignatureFile::parse(&sig.render()).unwrap(), sig);

    let future = sig.render().replace("format = 1", "format = 2");
    let err = SignatureFile::parse(&future).unwrap_err();
    assert!(err.reason.contains("unsupported signature format 2"), "{err}");

    let extra = format!("{}comment = \"x\"\n", sig.render());
    let err = SignatureFile::parse(&extra).unwrap_err();
    assert_eq!(err.line, extra.lines().count(), "{err}");
}

#[test]
fn public_key_strings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keypair(dir.path(), "k");
    let text = keys.public.to_string();
    assert_eq!(PublicKey::parse(&format!("  {text}\n")).unwrap(), keys.public);
    assert!(PublicKey::parse(text.trim_start_matches("ed25519:")).is_err());
    assert!(PublicKey::parse(&text[..text.len() - 2]).is_err());
    // The identity point is a weak key: it would accept forged signatures.
    let identity = format!("ed25519:01{}", "00".repeat(31));
    assert!(PublicKey::parse(&identity).is_err());
    assert!(read_public_key_file(Path::new("/nonexistent.pub")).is_err());
}

/// A FIFO given as a key file (`--trusted-key`, `plugin sign --key`) was opened for
/// reading, which waits for a writer for ever; a device was read without end (its size
/// is 0), `/dev/zero` until memory ran out. Both are refused, naming what they are.
#[test]
fn a_key_file_that_is_no_regular_file_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("k.pub");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send((read_public_key_file(&fifo), SecretKey::load(&fifo).map(drop)));
        })
    };
    let outcome = rx.recv_timeout(std::time::Duration::from_secs(5));
    // Let a waiting reader go (opening the write end ends its wait), so no thread is left
    // blocked whatever the verdict.
    for _ in 0..200 {
        if reader.is_finished() {
            break;
        }
        let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo).map(drop);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    reader.join().unwrap();
    let (public, secret) = outcome.expect("reading a FIFO as a key file did not return");
    for err in [public.unwrap_err(), secret.unwrap_err()] {
        assert!(matches!(&err, KeyError::NotRegularFile { kind: "FIFO", .. }), "{err}");
        assert!(err.to_string().contains(fifo.to_str().unwrap()), "{err}");
    }
    let zero = read_public_key_file(Path::new("/dev/zero")).unwrap_err();
    assert!(matches!(&zero, KeyError::NotRegularFile { kind: "character device", .. }), "{zero}");
}
