//! The CBOR request-response messages (block sync, state sync, expert tiles) as libp2p's cbor
//! codec decodes them from a peer: every message kind from the same bytes; what decodes must
//! re-encode and decode to the same value.
#![no_main]
use blyan_wire::sync::{decode, encode, SyncRequest, SyncResponse, TileRequest, TileResponse};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(message) = decode::<T>(data) {
        let again: T = decode(&encode(&message)).expect("a re-encoded message decodes");
        assert_eq!(again, message);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<SyncRequest>(data);
    check::<SyncResponse>(data);
    check::<TileRequest>(data);
    check::<TileResponse>(data);
});
