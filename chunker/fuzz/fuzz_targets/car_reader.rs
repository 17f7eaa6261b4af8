//! Drives `CarReader` over arbitrary bytes to the end: it must never panic, and never allocate past its caps.
#![no_main]

use btfs_chunker::car::CarReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = CarReader::new(data) {
        let _ = reader.roots();
        for block in reader {
            if block.is_err() {
                break;
            }
        }
    }
});
