//! Devnet manifests (`devnet up --manifest`, `devnet run`): any text parses to a validated
//! manifest or an error naming the field, never a panic; a manifest that validates resolves
//! to its nodes and plans its faults without a panic either.
#![no_main]
use blyan_harness::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(manifest) = Manifest::parse(text, "fuzz.toml") {
        let nodes = manifest.resolve();
        assert!(!nodes.is_empty(), "a valid manifest has nodes");
        let _ = manifest.byzantine_settings();
        let _ = manifest.staking_params();
    }
});
