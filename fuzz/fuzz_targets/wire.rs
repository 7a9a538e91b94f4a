//! Fuzz target `wire`: see [`hefl_fuzz::wire`] for the parser and the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hefl_fuzz::wire(data);
});
