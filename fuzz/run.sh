#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 20), coverage-guided
# by libFuzzer, on stable Rust. This is what CI calls; it fails on the first
# target that panics, hangs (-timeout) or runs away with memory (-rss_limit_mb),
# printing the end of libFuzzer's report and where the input was saved.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      targets: config sigfile public_key elf descriptors
#
# Reproduce a failure with the target binary and the saved input:
#   fuzz/target/<host>/release/<target> fuzz/artifacts/<target>-crash-<sha1>
#
# Why not `cargo fuzz run`: it needs cargo-fuzz installed and passes
# -Zsanitizer=address, which stable rustc refuses (unless RUSTC_BOOTSTRAP=1).
# The coverage instrumentation itself is SanitizerCoverage, reachable with
# stable codegen flags; they are cargo-fuzz's defaults minus the sanitizer.
# The directory keeps cargo-fuzz's layout, so `cargo fuzz run <target>` also
# works where cargo-fuzz and a nightly (or RUSTC_BOOTSTRAP=1) are available.
set -euo pipefail

seconds="${1:-20}"
if [[ ! "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz/run.sh: SECONDS must be a positive whole number, not '$seconds'" >&2
    exit 2
fi
shift || true
all=(config sigfile public_key elf descriptors)
if (($#)); then targets=("$@"); else targets=("${all[@]}"); fi

fuzz="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target_dir="${FUZZ_TARGET_DIR:-$fuzz/target}"
host="$(rustc -vV | sed -n 's/^host: //p')"

export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the instrumentation off build scripts and proc macros.
cargo build --locked --release --bins --manifest-path "$fuzz/Cargo.toml" --target "$host" --target-dir "$target_dir"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$fuzz/artifacts"
failed=()
for target in "${targets[@]}"; do
    binary="$target_dir/$host/release/$target"
    if [[ ! -x "$binary" || ! -d "$fuzz/corpus/$target" ]]; then
        echo "fuzz/run.sh: unknown target '$target' (known: ${all[*]})" >&2
        exit 2
    fi
    mkdir -p "$work/$target"
    # New inputs go to the scratch directory; the committed seeds are only read.
    if "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="$fuzz/artifacts/$target-" \
        "$work/$target" "$fuzz/corpus/$target" >"$work/$target.log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log")
        units=$(find "$work/$target" -type f | wc -l)
        echo "fuzz: $target: ok, ${runs:-?} inputs in ${seconds}s, $units new corpus units"
    else
        echo "fuzz: $target: FAILED" >&2
        tail -n 40 "$work/$target.log" >&2
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]} (inputs in $fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"
