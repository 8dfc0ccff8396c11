//! Gossip votes (the `/votes` topic): any bytes decode to a vote or an error, never a panic;
//! what decodes re-encodes to bytes that decode to the same vote.
#![no_main]
use blyan_wire::wire::{decode_vote, encode_vote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(vote) = decode_vote(data) {
        let again = decode_vote(&encode_vote(&vote)).expect("a re-encoded vote decodes");
        assert_eq!(again, vote);
    }
});
