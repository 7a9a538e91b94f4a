//! Fuzz target `tokens`: see [`hefl_fuzz::tokens`] for the parser and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hefl_fuzz::tokens(data);
});
