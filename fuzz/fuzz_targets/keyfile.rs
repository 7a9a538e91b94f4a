//! Fuzz target `keyfile`: see [`hefl_fuzz::keyfile`] for the parser and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hefl_fuzz::keyfile(data);
});
