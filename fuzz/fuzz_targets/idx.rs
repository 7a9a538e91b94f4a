//! Fuzz target `idx`: see [`hefl_fuzz::idx`] for the parser and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hefl_fuzz::idx(data);
});
