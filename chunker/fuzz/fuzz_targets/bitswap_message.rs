//! Decodes arbitrary bytes as a Bitswap message: the decoder may refuse but never panic, and whatever it
//! accepts re-encodes (for 1.2.0) to a message that decodes to the same value, with every block filed
//! under the CID its bytes hash to.
#![no_main]

use btfs_chunker::bitswap::{Message, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::decode(data) else { return };
    for (cid, bytes) in &msg.blocks {
        assert!(btfs_chunker::hash::verify(cid, bytes).is_ok(), "a decoded block must match its CID");
    }
    let again = Message::decode(&msg.encode(Version::V120)).expect("our own encoding decodes");
    assert_eq!(again, msg);
});
