//! Fuzz target `hub`: see [`hefl_fuzz::hub`] for the parser and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hefl_fuzz::hub(data);
});
