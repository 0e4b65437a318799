#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let _ = sink::decode::split_frame(sink::decode::Part::Value, data);
});
