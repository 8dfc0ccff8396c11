//! `blyan-node bench-infer`: expert load time (cold from disk, warm from the page cache), the
//! forward pass over a fixed sequence, and generation speed, on the default model generated
//! into a directory. `bench/moe_torch.py` runs it and the same forward pass in PyTorch on the
//! same files, in one run.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::model::{ExpertWeights, Model, MoeConfig};
use super::tiles::{ExpertStore, DEFAULT_TILE_BYTES};
use super::ExpertManifest;
use super::{generate_model, InferRequest, Inference, InferenceError, InferenceSettings};

/// What the benchmark measured (milliseconds unless named otherwise).
#[derive(Debug, Serialize)]
pub struct InferBench {
    pub config: MoeConfig,
    pub expert_bytes: u64,
    pub tiles_per_expert: usize,
    pub generate_s: f64,
    /// Load of one expert: open, map, verify every tile (BLAKE3), build the tensors.
    pub load_cold_ms: Vec<f64>,
    pub load_warm_ms: Vec<f64>,
    pub load_cold_median_ms: f64,
    pub load_warm_median_ms: f64,
    /// Of the warm load, the tile verification alone.
    pub verify_warm_median_ms: f64,
    /// One forward pass over `sequence` (experts in memory).
    pub sequence: Vec<u32>,
    pub forward_ms: Vec<f64>,
    pub forward_median_ms: f64,
    /// The last position's logits of that pass (for the PyTorch comparison).
    pub logits: Vec<f32>,
    /// Greedy generation through the node's service (cache warm): `new_tokens` from a prompt.
    pub new_tokens: u32,
    pub generate_ms: Vec<f64>,
    pub tokens_per_s: f64,
    pub threads: usize,
}

/// The middle value (the upper one of an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Drops a file's pages from the page cache (so the next read comes from the disk).
fn evict(path: &Path) -> Result<(), InferenceError> {
    let file = File::open(path).map_err(|error| InferenceError::Weights(error.to_string()))?;
    // SAFETY: a plain advisory call on a file descriptor this function owns.
    let code = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if code != 0 {
        return Err(InferenceError::Weights(format!(
            "posix_fadvise on {}: error {code}",
            path.display()
        )));
    }
    Ok(())
}

/// Runs the benchmark in `dir` (the model is generated there unless it already is).
pub fn run(
    dir: &Path,
    config: &MoeConfig,
    runs: usize,
    new_tokens: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<InferBench, InferenceError> {
    let store = ExpertStore::open(dir)?;
    let started = Instant::now();
    progress("generating the model");
    let manifests = generate_model(
        &store,
        "bench",
        config,
        DEFAULT_TILE_BYTES,
        &mut |done, total| {
            if done == total || done % 8 == 0 {
                progress(&format!("generated {done}/{total} files"));
            }
        },
    )?;
    let generate_s = started.elapsed().as_secs_f64();
    let device = candle_core::Device::Cpu;
    let experts = &manifests[1..];
    progress("timing expert loads");
    let loads = time_loads(&store, config, experts, runs, &device)?;
    progress("timing the forward pass");
    let sequence: Vec<u32> = (0..32u32)
        .map(|i| i.wrapping_mul(2654435761) % config.vocab as u32)
        .collect();
    let model = Model::load(&store.load(&manifests[0])?.map, &device)?;
    let (forward, logits) =
        time_forward(&store, config, &model, experts, &sequence, runs, &device)?;
    progress("timing generation");
    let generate = time_generation(dir, &sequence[..16], new_tokens)?;
    let generate_median = median(&generate);
    Ok(InferBench {
        config: config.clone(),
        expert_bytes: experts[0].bytes,
        tiles_per_expert: experts[0].tiles.len(),
        generate_s,
        load_cold_median_ms: median(&loads.cold),
        load_warm_median_ms: median(&loads.warm),
        verify_warm_median_ms: median(&loads.verify),
        load_cold_ms: loads.cold,
        load_warm_ms: loads.warm,
        sequence,
        forward_median_ms: median(&forward),
        forward_ms: forward,
        logits,
        new_tokens,
        tokens_per_s: f64::from(new_tokens) / (generate_median / 1000.0),
        generate_ms: generate,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
    })
}

/// Expert load times in ms: from disk with the page cache dropped (cold), then again (warm),
/// and the warm loads' hash verification alone.
struct Loads {
    cold: Vec<f64>,
    warm: Vec<f64>,
    verify: Vec<f64>,
}

fn time_loads(
    store: &ExpertStore,
    config: &MoeConfig,
    experts: &[ExpertManifest],
    runs: usize,
    device: &candle_core::Device,
) -> Result<Loads, InferenceError> {
    let (mut cold, mut warm, mut verify) = (Vec::new(), Vec::new(), Vec::new());
    for manifest in experts.iter().take(runs.max(1)) {
        let path = store.data_path(&manifest.content_hash);
        for pass in 0..2 {
            if pass == 0 {
                evict(&path)?;
            }
            let started = Instant::now();
            let mapped = store.load(manifest)?;
            let verified = started.elapsed();
            let weights = ExpertWeights::load(config, &mapped.map, device)?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(weights.bytes, config.expert_bytes());
            if pass == 0 {
                cold.push(elapsed);
            } else {
                warm.push(elapsed);
                verify.push(verified.as_secs_f64() * 1000.0);
            }
        }
    }
    Ok(Loads { cold, warm, verify })
}

/// `runs` forward passes over `sequence` with every expert in memory (after one that warms
/// allocations): their times in ms and the last position's logits.
fn time_forward(
    store: &ExpertStore,
    config: &MoeConfig,
    model: &Model,
    experts: &[ExpertManifest],
    sequence: &[u32],
    runs: usize,
    device: &candle_core::Device,
) -> Result<(Vec<f64>, Vec<f32>), InferenceError> {
    let loaded: Vec<Arc<ExpertWeights>> = experts
        .iter()
        .map(|manifest| {
            let mapped = store.load(manifest)?;
            Ok(Arc::new(ExpertWeights::load(config, &mapped.map, device)?))
        })
        .collect::<Result<_, InferenceError>>()?;
    let mut forward = Vec::new();
    let mut logits = Vec::new();
    for _ in 0..runs.max(1) + 1 {
        let started = Instant::now();
        let output = model.forward(sequence, &mut |layer, index| {
            Ok(loaded[layer * config.experts + index as usize].clone())
        })?;
        forward.push(started.elapsed().as_secs_f64() * 1000.0);
        logits = output.last_logits;
    }
    forward.remove(0); // the first pass warms allocations
    Ok((forward, logits))
}

/// Three timed generations of `new_tokens` from `prompt` through the inference service (after
/// one untimed), in ms each.
fn time_generation(
    dir: &Path,
    prompt: &[u32],
    new_tokens: u32,
) -> Result<Vec<f64>, InferenceError> {
    let service = Inference::new(
        ExpertStore::open(dir)?,
        crate::metrics::InferenceMetrics::default(),
        None,
        None,
        InferenceSettings {
            cache_bytes: u64::MAX,
            max_new_tokens: new_tokens,
            default_model: "bench".into(),
        },
    );
    let request = InferRequest {
        model: None,
        tokens: prompt.to_vec(),
        max_new_tokens: new_tokens,
    };
    service.infer_blocking(&request)?;
    let mut generate = Vec::new();
    for _ in 0..3 {
        let answer = service.infer_blocking(&request)?;
        generate.push(answer.elapsed_ms);
    }
    Ok(generate)
}
