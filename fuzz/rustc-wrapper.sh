#!/usr/bin/env bash
# RUSTC_WRAPPER for the fuzz build (tools/fuzz.sh sets it): compiles tfhe's crates and the
# SIMD library under them without cargo-fuzz's instrumentation, debug assertions and single
# codegen unit. With those, rustc spends well over half an hour on tfhe-fft's AVX-512 code;
# without them, a minute. Nothing any fuzz target parses runs in those crates (they do the
# encryption arithmetic and FFTs), so coverage loses nothing; every other crate, hefl
# included, is built exactly as cargo-fuzz asks.
rustc=$1
shift
case " $* " in
*" --crate-name tfhe"* | *" --crate-name pulp "*)
    args=()
    for arg in "$@"; do
        case "$arg" in
        -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-* | \
            -Cllvm-args=-simplifycfg-branch-fold-threshold=0 | -Cdebug-assertions | \
            -Ccodegen-units=1) ;;
        *) args+=("$arg") ;;
        esac
    done
    exec "$rustc" "${args[@]}"
    ;;
esac
exec "$rustc" "$@"
