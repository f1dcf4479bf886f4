//! The zoo's memory hog: memory that is really allocated, really resident
//! and kept, in every build profile. Only `std`, so a test can compile this
//! file alone with full optimisation and watch the process grow.
//!
//! The first version wrote to `Vec`s it then leaked with `mem::forget`; the
//! optimiser saw no reader and removed the allocations whole, so a release
//! zoo "held" 512 MiB in 0.7 MiB and nothing was ever OOM-killed.

use std::sync::{Mutex, PoisonError};

const MIB: usize = 1 << 20;
/// The smallest page size Linux uses: one write per page makes it resident.
const PAGE: usize = 4096;

/// Reachable for the life of the process, so the memory is never dead.
static HELD: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// Allocates `mib` MiB, writes to every page of it, and keeps it. Returns
/// the MiB held in all.
pub fn hold_mib(mib: u32) -> usize {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..mib {
        let mut chunk = vec![0u8; MIB].into_boxed_slice();
        for byte in chunk.iter_mut().step_by(PAGE) {
            // Volatile: a store the optimiser may not remove, however
            // little it sees of the memory being read again.
            // SAFETY: `byte` is a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(byte, 1) };
        }
        held.push(chunk);
    }
    held.len()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    /// Builds this file alone at opt-level 3 (what a release build does to
    /// it) into a program that holds 64 MiB, and reads the program's
    /// resident anonymous memory before and after.
    #[test]
    fn the_hog_holds_its_memory_under_full_optimisation() {
        let dir = tempfile::tempdir().unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/hog.rs");
        let main = dir.path().join("main.rs");
        std::fs::write(
            &main,
            format!(
                r#"#[path = {source:?}]
mod hog;
fn anon_kib() -> u64 {{
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}}
fn main() {{
    let before = anon_kib();
    let held = hog::hold_mib(64);
    println!("{{before}} {{}} {{held}}", anon_kib());
}}
"#
            ),
        )
        .unwrap();
        let exe = dir.path().join("hog");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let built = Command::new(rustc)
            .args(["--edition", "2024", "-C", "opt-level=3", "-o"])
            .arg(&exe)
            .arg(&main)
            .output()
            .expect("run rustc");
        assert!(built.status.success(), "rustc: {}", String::from_utf8_lossy(&built.stderr));
        let out = Command::new(&exe).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let numbers: Vec<u64> = text.split_whitespace().map(|n| n.parse().unwrap()).collect();
        let [before, after, held] = numbers[..] else { panic!("unexpected output {text:?}") };
        assert_eq!(held, 64);
        assert!(
            after.saturating_sub(before) >= 64 * 1024,
            "holding 64 MiB grew the process from {before} to {after} KiB"
        );
    }
}
