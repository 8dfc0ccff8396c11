//! Transactions (the `/txs` topic, `POST /txs`, block bodies).
#![no_main]
use blyan_wire::tx::Tx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = Tx::decode(data) {
        let again = Tx::decode(&tx.encode()).expect("a re-encoded transaction decodes");
        assert_eq!(again, tx);
        // Checking a signature of any decoded transaction must not panic either.
        let _ = tx.verify("blyan-devnet");
    }
});
