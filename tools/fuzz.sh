#!/usr/bin/env bash
# Runs hefl's fuzz targets (fuzz/fuzz_targets/) under libFuzzer for a bounded time.
#
#   tools/fuzz.sh [TARGET|all] [SECONDS]     default: all targets, 600 seconds each
#
# Targets: wire plain plan hub keyfile tokens idx (see fuzz/src/lib.rs for what each checks).
# Builds with cargo-fuzz on the stable toolchain (`--sanitizer none`: AddressSanitizer needs
# nightly, and hefl has no unsafe code of its own), installing cargo-fuzz if it is missing;
# hefl and the checks with overflow checks and debug assertions, tfhe's crates without
# instrumentation (fuzz/rustc-wrapper.sh).
# Targets run one after another, one process at a time. Each run reads the committed seeds
# (fuzz/seeds/<target>/) and grows a scratch corpus (fuzz/corpus/<target>/, not committed);
# a crash or hang is saved under fuzz/artifacts/<target>/ and stops the script with an error.
# Logs go to $FUZZ_LOG_DIR (default fuzz/logs/), and a summary line per target is printed:
# executions, executions per second, coverage (cov: edges, ft: features), corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(wire plain plan hub keyfile tokens idx)
target=${1:-all}
seconds=${2:-600}
log_dir=${FUZZ_LOG_DIR:-fuzz/logs}

if [ "$target" = all ]; then
    targets=("${ALL_TARGETS[@]}")
elif [[ " ${ALL_TARGETS[*]} " == *" $target "* ]]; then
    targets=("$target")
else
    echo "unknown fuzz target '$target': expected one of ${ALL_TARGETS[*]} or all" >&2
    exit 2
fi
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "SECONDS must be a positive whole number, got '$seconds'" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
# libFuzzer's runtime is C++, built by libfuzzer-sys.
if ! command -v c++ >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
fi

mkdir -p "$log_dir"
cd fuzz
# tfhe's crates built without instrumentation (see the wrapper): a build of minutes, not hours.
export RUSTC_WRAPPER="$PWD/rustc-wrapper.sh"
cargo fuzz build --sanitizer none

# The ciphertext messages are one GLWE ciphertext (about 33 kB): allow inputs that long.
max_len() {
    case "$1" in
        wire | hub) echo 40000 ;;
        plain) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="../$log_dir/$t.log"
    [[ "$log_dir" = /* ]] && log="$log_dir/$t.log"
    echo "fuzzing $t for ${seconds}s (log: $log)" >&2
    set +e
    cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len="$(max_len "$t")" \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo '?')
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo '?')
    corpus=$(find "corpus/$t" -type f | wc -l)
    echo "$t: exit $rc, ${seconds}s, $execs executions, $rate exec/s, cov $cov, ft $ft, corpus $corpus files"
    if [ "$rc" -ne 0 ]; then
        echo "$t: libFuzzer exited $rc: see $log and fuzz/artifacts/$t/" >&2
        status=1
    fi
done
exit "$status"
