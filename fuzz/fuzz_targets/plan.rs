//! Fuzz target `plan`: see [`hefl_fuzz::plan_json`] for the parser and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hefl_fuzz::plan_json(data);
});
