use std::collections::HashMap;
use std::time::Duration;

use super::model::{self, MoeConfig};
use super::*;
use crate::config::P2pConfig;

fn tiny() -> MoeConfig {
    MoeConfig {
        vocab: 64,
        dim: 16,
        hidden: 24,
        layers: 2,
        experts: 4,
        top_k: 2,
        max_seq: 32,
        seed: 7,
    }
}

fn settings() -> InferenceSettings {
    InferenceSettings {
        cache_bytes: 64 << 20,
        max_new_tokens: 16,
        default_model: "tiny".into(),
    }
}

fn metrics() -> InferenceMetrics {
    InferenceMetrics::default()
}

/// A store holding the tiny model, tiles of 1000 bytes (several per expert).
fn generated(dir: &std::path::Path) -> (ExpertStore, Vec<ExpertManifest>) {
    let store = ExpertStore::open(dir).unwrap();
    let manifests = generate_model(&store, "tiny", &tiny(), 1000, &mut |_, _| {}).unwrap();
    (store, manifests)
}

#[test]
fn generation_is_a_function_of_the_seed() {
    let config = tiny();
    assert_eq!(model::generate_base(&config), model::generate_base(&config));
    assert_eq!(
        model::generate_expert(&config, 1, 2),
        model::generate_expert(&config, 1, 2)
    );
    assert_ne!(
        model::generate_expert(&config, 1, 2),
        model::generate_expert(&config, 1, 3)
    );
    let other = MoeConfig {
        seed: 8,
        ..config.clone()
    };
    assert_ne!(model::generate_base(&config), model::generate_base(&other));
    assert_eq!(
        model::read_config(&model::generate_base(&config)).unwrap(),
        config
    );
    // The default expert is one 4 MiB tile.
    let default = MoeConfig::default();
    let expert = model::generate_expert(
        &MoeConfig {
            layers: 1,
            ..default.clone()
        },
        0,
        0,
    );
    assert!(
        expert.len() as u64 <= tiles::MAX_TILE_BYTES,
        "{}",
        expert.len()
    );
    assert!(expert.len() > 4_190_000, "{}", expert.len());
}

/// The candle forward pass against plain loops over the same weights.
#[test]
fn candle_forward_matches_the_plain_loop_reference() {
    let config = tiny();
    let base = model::generate_base(&config);
    let mut experts = HashMap::new();
    for layer in 0..config.layers {
        for index in 0..config.experts {
            experts.insert(
                (layer, index as u32),
                model::generate_expert(&config, layer, index),
            );
        }
    }
    let device = candle_core::Device::Cpu;
    let loaded = model::Model::load(&base, &device).unwrap();
    let mut worst = 0f32;
    for (case, tokens) in [
        vec![1u32],
        vec![5, 9, 63, 0, 17],
        (0..32).map(|i| (i * 7 % 64) as u32).collect::<Vec<_>>(),
    ]
    .into_iter()
    .enumerate()
    {
        let output = loaded
            .forward(&tokens, &mut |layer, index| {
                Ok(Arc::new(
                    model::ExpertWeights::load(&config, &experts[&(layer, index)], &device)
                        .unwrap(),
                ))
            })
            .unwrap();
        let (expected, used) = reference::forward(&base, &experts, &config, &tokens).unwrap();
        assert_eq!(output.experts, used, "case {case}: routed experts");
        assert_eq!(output.last_logits.len(), config.vocab);
        for (got, want) in output.last_logits.iter().zip(&expected) {
            let error = (got - want).abs() / want.abs().max(1.0);
            worst = worst.max(error);
        }
        assert_eq!(
            model::argmax(&output.last_logits),
            model::argmax(&expected),
            "case {case}: next token"
        );
    }
    // Stated tolerance: 1e-4 relative (f32, different summation orders).
    eprintln!("candle vs plain loops: worst relative logit error {worst:e}");
    assert!(worst < 1e-4, "worst relative error {worst}");
}

#[test]
fn routing_takes_the_top_k_and_renormalises() {
    let routed = model::route(&[0.0, 2.0, 1.0, 2.0], 2);
    assert_eq!(
        routed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert!((routed[0].1 - 0.5).abs() < 1e-6 && (routed[1].1 - 0.5).abs() < 1e-6);
    let routed = model::route(&[3.0, 0.0, 1.0], 1);
    assert_eq!(routed, vec![(0, 1.0)]);
    assert_eq!(model::argmax(&[1.0, 3.0, 3.0]), 1);
}

#[test]
fn local_inference_is_deterministic_and_loads_only_routed_experts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = generated(dir.path());
    let service = Inference::new(store, metrics(), None, None, settings());
    let request = InferRequest {
        model: None,
        tokens: vec![3, 14, 15, 9],
        max_new_tokens: 6,
    };
    let first = service.infer_blocking(&request).unwrap();
    assert_eq!(first.tokens.len(), 6);
    assert_eq!(first.experts.len(), 2);
    let loaded: usize = first.experts.iter().map(Vec::len).sum();
    assert_eq!(
        first.expert_loads as usize, loaded,
        "each used expert loaded once"
    );
    assert!(first.expert_hits > 0, "later steps hit the cache");
    let second = service.infer_blocking(&request).unwrap();
    assert_eq!(second.output_hash, first.output_hash);
    assert_eq!(second.tokens, first.tokens);
    assert_eq!(second.expert_loads, 0, "all cached now");
    // A fresh service over the same files gives the same bits.
    let again = Inference::new(
        ExpertStore::open(dir.path()).unwrap(),
        metrics(),
        None,
        None,
        settings(),
    );
    assert_eq!(
        again.infer_blocking(&request).unwrap().output_hash,
        first.output_hash
    );
}

#[test]
fn requests_beyond_limits_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = generated(dir.path());
    let service = Inference::new(store, metrics(), None, None, settings());
    let refused = |tokens: Vec<u32>, max_new_tokens: u32, model: Option<&str>| {
        let request = InferRequest {
            model: model.map(str::to_string),
            tokens,
            max_new_tokens,
        };
        match service.infer_blocking(&request) {
            Err(error) => error.to_string(),
            Ok(_) => panic!("{request:?} was accepted"),
        }
    };
    assert!(refused(vec![], 1, None).contains("tokens: empty"));
    assert!(refused(vec![1], 0, None).contains("max_new_tokens: 0"));
    assert!(refused(vec![1], 17, None).contains("max_new_tokens: 17"));
    assert!(refused(vec![1, 64], 1, None).contains("tokens[1]: 64"));
    assert!(refused(vec![1; 30], 3, None).contains("max_seq 32"));
    assert!(refused(vec![1], 1, Some("nope")).contains("nope/base"));
    assert!(refused(vec![1], 1, Some("a/b")).contains("model:"));
}

#[test]
fn the_cache_stays_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = generated(dir.path());
    let expert_bytes = tiny().expert_bytes() as u64;
    let service = Inference::new(
        store,
        metrics(),
        None,
        None,
        InferenceSettings {
            cache_bytes: 3 * expert_bytes,
            ..settings()
        },
    );
    let request = InferRequest {
        model: None,
        tokens: (0..20).collect(),
        max_new_tokens: 4,
    };
    let response = service.infer_blocking(&request).unwrap();
    let used: usize = response.experts.iter().map(Vec::len).sum();
    assert!(used > 3, "the request routes to {used} experts");
    let cache = service.cache.lock().unwrap();
    assert!(
        cache.bytes <= 3 * expert_bytes,
        "{} bytes cached",
        cache.bytes
    );
    assert_eq!(cache.entries.len(), 3);
    drop(cache);
    // Evicted experts are loaded again, and the answer is the same.
    let again = service.infer_blocking(&request).unwrap();
    assert_eq!(again.output_hash, response.output_hash);
    assert!(again.expert_loads > 0);
}

async fn peer(bootstrap: Vec<String>) -> (P2pHandle, String) {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let config = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap,
        static_mode: true,
        ..P2pConfig::default()
    };
    let (handle, mut events, bound) = crate::p2p::spawn(key.clone(), &config, "infer")
        .await
        .unwrap();
    // Nobody runs a node loop here: drain its events.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let address = format!("{}/p2p/{}", bound[0], handle.local_peer_id);
    (handle, address)
}

async fn wait_connected(handle: &P2pHandle, count: usize) {
    for _ in 0..100 {
        if handle.connected_peers().len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("peers did not connect");
}

/// Serves a node's tile requests from `service`.
fn serve(handle: &P2pHandle, service: Arc<Inference>) {
    let requests = handle.tile_requests.lock().unwrap().take().unwrap();
    tokio::spawn(service.serve_peers(requests, handle.commands.clone()));
}

// Over 100 lines on purpose: one story (a liar, an honest peer, a node that fetches from both)
// whose steps share the swarms it starts; split, each part would start them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experts_missing_locally_are_fetched_from_a_peer_and_bad_tiles_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (source_store, manifests) = generated(&dir.path().join("source"));
    let records: Vec<ExpertRecord> = manifests.iter().map(record_of).collect();
    let registry: Registry = Arc::new(move || records.clone());

    // A liar that answers every tile with the wrong bytes (and the true manifest).
    let (liar, liar_address) = peer(vec![]).await;
    let honest_view = Arc::new(Inference::new(
        source_store.clone(),
        metrics(),
        None,
        None,
        settings(),
    ));
    let mut liar_requests = liar.tile_requests.lock().unwrap().take().unwrap();
    let liar_commands = liar.commands.clone();
    let view = honest_view.clone();
    tokio::spawn(async move {
        while let Some(inbound) = liar_requests.recv().await {
            let response = match view.serve(&inbound.request) {
                TileResponse::Tile { index, mut bytes } => {
                    bytes[0] ^= 0xff;
                    TileResponse::Tile { index, bytes }
                }
                other => other,
            };
            let _ = liar_commands.send(P2pCommand::RespondTile {
                channel: inbound.channel,
                response,
            });
        }
    });

    // The node that has nothing but the registry, connected to the liar only.
    let (fetcher, fetcher_address) = peer(vec![liar_address]).await;
    wait_connected(&fetcher, 1).await;
    let metrics = metrics();
    let empty = ExpertStore::open(dir.path().join("fetcher")).unwrap();
    let service = Arc::new(Inference::new(
        empty.clone(),
        metrics.clone(),
        Some(fetcher.clone()),
        Some(registry.clone()),
        settings(),
    ));
    let request = InferRequest {
        model: None,
        tokens: vec![2, 7, 1, 8],
        max_new_tokens: 3,
    };
    let error = service
        .infer(request.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("does not match its hash: refused"),
        "{error}"
    );
    assert!(metrics.tiles_refused.get() >= 1);
    assert!(
        empty.list().unwrap().is_empty(),
        "nothing unverified was stored"
    );

    // An honest peer joins: the same request now fetches and answers, equal to the source's.
    let (honest, _) = peer(vec![fetcher_address]).await;
    serve(
        &honest,
        Arc::new(Inference::new(
            source_store,
            InferenceMetrics::default(),
            None,
            None,
            settings(),
        )),
    );
    wait_connected(&fetcher, 2).await;
    let fetched = service.infer(request.clone()).await.unwrap();
    let local = honest_view.infer_blocking(&request).unwrap();
    assert_eq!(fetched.output_hash, local.output_hash);
    assert_eq!(fetched.tokens, local.tokens);
    let stored = empty.list().unwrap();
    let used: usize = fetched.experts.iter().map(Vec::len).sum();
    assert_eq!(
        stored.len(),
        1 + used,
        "the base and only the routed experts were fetched"
    );
    assert!(metrics.tiles_fetched.get() >= stored.len() as u64);

    // A tile of a fetched expert is tampered with on disk: refused on load, fetched again.
    let victim = stored
        .iter()
        .find(|manifest| manifest.name.contains("/l1/"))
        .expect("a layer-1 expert was fetched");
    let path = empty.data_path(&victim.content_hash);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1500] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let refused_before = metrics.tiles_refused.get();
    let fresh = Arc::new(Inference::new(
        empty.clone(),
        metrics.clone(),
        Some(fetcher.clone()),
        Some(registry),
        settings(),
    ));
    let repaired = fresh.infer(request).await.unwrap();
    assert_eq!(repaired.output_hash, local.output_hash);
    assert!(
        metrics.tiles_refused.get() > refused_before,
        "the bad tile was refused"
    );
    empty.load(victim).expect("repaired on disk");
}
