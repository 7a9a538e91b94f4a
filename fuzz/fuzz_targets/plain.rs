//! Fuzz target `plain`: see [`hefl_fuzz::plain`] for the parser and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hefl_fuzz::plain(data);
});
