//! A small Mixtral-style mixture-of-experts model, its seeded weight generator, and its
//! forward pass with candle.
//!
//! Per layer: RMSNorm, single-head causal self-attention (learned positions), RMSNorm, a
//! router choosing the top-k of E experts per token (softmax, weights renormalised over the k
//! chosen), each expert a SwiGLU MLP `(silu(x W1) * (x W3)) W2`; then a final RMSNorm and the
//! output head. Greedy decoding (ties to the lower token id).
//!
//! Weights are two kinds of safetensors files: `MODEL/base` (embedding, positions, attention,
//! norms, routers, head, and the [`MoeConfig`] in the header's metadata) and one file per
//! expert `MODEL/l<layer>/e<index>` (`w1`, `w3` as `[dim, hidden]`, `w2` as `[hidden, dim]`).
//! All matrices are stored `[in, out]`. They are read with candle's own safetensors loader,
//! the one a real checkpoint goes through.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use super::InferenceError;

/// The header metadata key holding the model's configuration.
pub const CONFIG_KEY: &str = "blyan.moe";

/// The shape of a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoeConfig {
    pub vocab: usize,
    pub dim: usize,
    /// Each expert's hidden width.
    pub hidden: usize,
    pub layers: usize,
    pub experts: usize,
    pub top_k: usize,
    /// Longest sequence (prompt plus generated tokens).
    pub max_seq: usize,
    pub seed: u64,
}

impl Default for MoeConfig {
    /// The default model: 4 layers of 8 experts, each expert 4,193,280 bytes of f32 weights
    /// (a 4 MiB tile less its safetensors header).
    fn default() -> MoeConfig {
        MoeConfig {
            vocab: 1024,
            dim: 256,
            hidden: 1365,
            layers: 4,
            experts: 8,
            top_k: 2,
            max_seq: 128,
            seed: 42,
        }
    }
}

impl MoeConfig {
    /// Checks every field, naming the bad one.
    pub fn check(&self) -> Result<(), InferenceError> {
        let field = |name: &str, value: usize, low: usize, high: usize| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(InferenceError::Config(format!(
                    "{name} {value} is not between {low} and {high}"
                )))
            }
        };
        field("vocab", self.vocab, 2, 1 << 17)?;
        field("dim", self.dim, 2, 8192)?;
        field("hidden", self.hidden, 1, 65536)?;
        field("layers", self.layers, 1, 64)?;
        field("experts", self.experts, 1, 256)?;
        field("top_k", self.top_k, 1, self.experts)?;
        field("max_seq", self.max_seq, 2, 4096)?;
        Ok(())
    }

    /// Bytes of one expert's weights.
    pub fn expert_bytes(&self) -> usize {
        3 * self.dim * self.hidden * 4
    }
}

/// The names of a model's files.
pub fn base_name(model: &str) -> String {
    format!("{model}/base")
}

pub fn expert_name(model: &str, layer: usize, index: usize) -> String {
    format!("{model}/l{layer}/e{index}")
}

/// A tensor of uniform values in [-scale, scale) from a ChaCha8 stream keyed by the seed and
/// the tensor's name (so each tensor is independent of the others and of their order).
fn seeded(seed: u64, name: &str, len: usize, scale: f32, offset: f32) -> Vec<f32> {
    let mut key = blake3::Hasher::new();
    key.update(&seed.to_le_bytes());
    key.update(name.as_bytes());
    let mut rng = rand_chacha::ChaCha8Rng::from_seed(*key.finalize().as_bytes());
    (0..len)
        .map(|_| {
            let unit = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
            offset + (unit * 2.0 - 1.0) * scale
        })
        .collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

/// Serialises named f32 tensors as safetensors.
fn safetensors_file(
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    metadata: Option<HashMap<String, String>>,
) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, values)| (name, shape, f32_bytes(&values)))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    safetensors::tensor::serialize(views, metadata).expect("in-memory serialisation")
}

/// The base weights file of a model generated from `config.seed`.
pub fn generate_base(config: &MoeConfig) -> Vec<u8> {
    let (v, d, e, s) = (config.vocab, config.dim, config.experts, config.max_seq);
    let seed = config.seed;
    let scale = 1.0 / (d as f32).sqrt();
    let mut tensors = vec![
        (
            "embed".into(),
            vec![v, d],
            seeded(seed, "embed", v * d, 1.0, 0.0),
        ),
        (
            "pos".into(),
            vec![s, d],
            seeded(seed, "pos", s * d, 0.5, 0.0),
        ),
        (
            "final_norm".into(),
            vec![d],
            seeded(seed, "final_norm", d, 0.1, 1.0),
        ),
        (
            "head".into(),
            vec![d, v],
            seeded(seed, "head", d * v, scale, 0.0),
        ),
    ];
    for layer in 0..config.layers {
        let name = |part: &str| format!("l{layer}.{part}");
        for part in ["wq", "wk", "wv", "wo"] {
            tensors.push((
                name(part),
                vec![d, d],
                seeded(seed, &name(part), d * d, scale, 0.0),
            ));
        }
        for part in ["attn_norm", "ffn_norm"] {
            tensors.push((name(part), vec![d], seeded(seed, &name(part), d, 0.1, 1.0)));
        }
        tensors.push((
            name("router"),
            vec![d, e],
            seeded(seed, &name("router"), d * e, 1.0, 0.0),
        ));
    }
    let metadata = HashMap::from([(
        CONFIG_KEY.to_string(),
        serde_json::to_string(config).expect("config serialises"),
    )]);
    safetensors_file(tensors, Some(metadata))
}

/// One expert's weights file.
pub fn generate_expert(config: &MoeConfig, layer: usize, index: usize) -> Vec<u8> {
    let (d, h) = (config.dim, config.hidden);
    let prefix = format!("l{layer}.e{index}");
    let matrix = |part: &str, rows: usize, cols: usize| {
        let values = seeded(
            config.seed,
            &format!("{prefix}.{part}"),
            rows * cols,
            1.0 / (rows as f32).sqrt(),
            0.0,
        );
        (part.to_string(), vec![rows, cols], values)
    };
    let tensors = vec![matrix("w1", d, h), matrix("w3", d, h), matrix("w2", h, d)];
    safetensors_file(tensors, None)
}

/// Reads the model configuration from a base file's header.
pub fn read_config(base: &[u8]) -> Result<MoeConfig, InferenceError> {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(base)
        .map_err(|error| InferenceError::Weights(format!("base header: {error}")))?;
    let text = metadata
        .metadata()
        .as_ref()
        .and_then(|map| map.get(CONFIG_KEY))
        .ok_or_else(|| InferenceError::Weights(format!("base has no {CONFIG_KEY} metadata")))?;
    let config: MoeConfig = serde_json::from_str(text)
        .map_err(|error| InferenceError::Weights(format!("{CONFIG_KEY}: {error}")))?;
    config.check()?;
    Ok(config)
}

fn take(
    tensors: &mut HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
) -> Result<Tensor, InferenceError> {
    let tensor = tensors
        .remove(name)
        .ok_or_else(|| InferenceError::Weights(format!("tensor {name} missing")))?;
    if tensor.dims() != shape || tensor.dtype() != DType::F32 {
        return Err(InferenceError::Weights(format!(
            "tensor {name}: {:?} {:?}, expected f32 {shape:?}",
            tensor.dtype(),
            tensor.dims()
        )));
    }
    Ok(tensor)
}

/// One layer's dense weights.
struct Layer {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    attn_norm: Tensor,
    ffn_norm: Tensor,
    router: Tensor,
}

/// The non-expert weights, loaded.
pub struct Model {
    pub config: MoeConfig,
    device: Device,
    embed: Tensor,
    pos: Tensor,
    final_norm: Tensor,
    head: Tensor,
    layers: Vec<Layer>,
}

/// One expert's weights, loaded.
pub struct ExpertWeights {
    w1: Tensor,
    w3: Tensor,
    w2: Tensor,
    pub bytes: usize,
}

impl ExpertWeights {
    /// Loads an expert from its safetensors bytes (a memory map of the verified file).
    pub fn load(
        config: &MoeConfig,
        bytes: &[u8],
        device: &Device,
    ) -> Result<ExpertWeights, InferenceError> {
        let mut tensors = candle_core::safetensors::load_buffer(bytes, device)
            .map_err(|error| InferenceError::Weights(format!("expert: {error}")))?;
        let (d, h) = (config.dim, config.hidden);
        Ok(ExpertWeights {
            w1: take(&mut tensors, "w1", &[d, h])?,
            w3: take(&mut tensors, "w3", &[d, h])?,
            w2: take(&mut tensors, "w2", &[h, d])?,
            bytes: config.expert_bytes(),
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = x.matmul(&self.w1)?.silu()?;
        let up = x.matmul(&self.w3)?;
        (gate * up)?.matmul(&self.w2)
    }
}

/// What one forward pass over a sequence gives.
pub struct ForwardOutput {
    /// The logits of the last position.
    pub last_logits: Vec<f32>,
    /// The experts each layer used for any token of the sequence.
    pub experts: Vec<BTreeSet<u32>>,
}

/// The router's choice for one token: the top-k experts (descending probability, ties to the
/// lower index) with their weights renormalised over the k.
pub fn route(logits: &[f32], top_k: usize) -> Vec<(u32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|logit| (logit - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| exps[*b].total_cmp(&exps[*a]).then(a.cmp(b)));
    let chosen = &order[..top_k];
    let kept: f32 = chosen.iter().map(|index| exps[*index] / sum).sum();
    chosen
        .iter()
        .map(|index| (*index as u32, exps[*index] / sum / kept))
        .collect()
}

/// The index of the largest value (ties to the lower index).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best as u32
}

fn candle(error: candle_core::Error) -> InferenceError {
    InferenceError::Compute(error.to_string())
}

impl Model {
    /// Loads the base weights from their safetensors bytes.
    pub fn load(base: &[u8], device: &Device) -> Result<Model, InferenceError> {
        let config = read_config(base)?;
        let mut tensors = candle_core::safetensors::load_buffer(base, device)
            .map_err(|error| InferenceError::Weights(format!("base: {error}")))?;
        let (v, d, e, s) = (config.vocab, config.dim, config.experts, config.max_seq);
        let mut layers = Vec::with_capacity(config.layers);
        for layer in 0..config.layers {
            let name = |part: &str| format!("l{layer}.{part}");
            layers.push(Layer {
                wq: take(&mut tensors, &name("wq"), &[d, d])?,
                wk: take(&mut tensors, &name("wk"), &[d, d])?,
                wv: take(&mut tensors, &name("wv"), &[d, d])?,
                wo: take(&mut tensors, &name("wo"), &[d, d])?,
                attn_norm: take(&mut tensors, &name("attn_norm"), &[d])?,
                ffn_norm: take(&mut tensors, &name("ffn_norm"), &[d])?,
                router: take(&mut tensors, &name("router"), &[d, e])?,
            });
        }
        Ok(Model {
            embed: take(&mut tensors, "embed", &[v, d])?,
            pos: take(&mut tensors, "pos", &[s, d])?,
            final_norm: take(&mut tensors, "final_norm", &[d])?,
            head: take(&mut tensors, "head", &[d, v])?,
            layers,
            device: device.clone(),
            config,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks a token sequence against the model's limits.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<(), InferenceError> {
        if tokens.is_empty() || tokens.len() > self.config.max_seq {
            return Err(InferenceError::Request(format!(
                "tokens: {} tokens, the model takes 1 to {}",
                tokens.len(),
                self.config.max_seq
            )));
        }
        if let Some((index, token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, token)| **token as usize >= self.config.vocab)
        {
            return Err(InferenceError::Request(format!(
                "tokens[{index}]: {token} is not below the vocabulary size {}",
                self.config.vocab
            )));
        }
        Ok(())
    }

    /// One forward pass over `tokens`; `expert` gives a layer's routed expert (loading it on a
    /// miss): only the experts the router picks are ever asked for.
    pub fn forward(
        &self,
        tokens: &[u32],
        expert: &mut dyn FnMut(usize, u32) -> Result<Arc<ExpertWeights>, InferenceError>,
    ) -> Result<ForwardOutput, InferenceError> {
        self.check_tokens(tokens)?;
        let n = tokens.len();
        let d = self.config.dim;
        let ids = Tensor::new(tokens, &self.device).map_err(candle)?;
        let positions = self.pos.narrow(0, 0, n).map_err(candle)?;
        let mut x =
            (self.embed.index_select(&ids, 0).map_err(candle)? + positions).map_err(candle)?;
        let mask: Vec<f32> = (0..n * n)
            .map(|i| {
                if i % n > i / n {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (n, n), &self.device).map_err(candle)?;
        let scale = 1.0 / (d as f64).sqrt();
        let mut used = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm).map_err(candle)?;
            let q = h.matmul(&layer.wq).map_err(candle)?;
            let k = h.matmul(&layer.wk).map_err(candle)?;
            let v = h.matmul(&layer.wv).map_err(candle)?;
            let scores = (q.matmul(&k.t().map_err(candle)?).map_err(candle)? * scale)
                .and_then(|scores| scores + &mask)
                .map_err(candle)?;
            let attention = softmax_rows(&scores).map_err(candle)?;
            let mixed = attention
                .matmul(&v)
                .and_then(|mixed| mixed.matmul(&layer.wo))
                .map_err(candle)?;
            x = (x + mixed).map_err(candle)?;
            let h = rms_norm(&x, &layer.ffn_norm).map_err(candle)?;
            let router_logits: Vec<Vec<f32>> = h
                .matmul(&layer.router)
                .and_then(|logits| logits.to_vec2())
                .map_err(candle)?;
            // Tokens (and their weights) per chosen expert, experts in ascending order.
            let mut assigned: Vec<(Vec<u32>, Vec<f32>)> =
                vec![(Vec::new(), Vec::new()); self.config.experts];
            for (token, logits) in router_logits.iter().enumerate() {
                for (chosen, weight) in route(logits, self.config.top_k) {
                    assigned[chosen as usize].0.push(token as u32);
                    assigned[chosen as usize].1.push(weight);
                }
            }
            let mut out = Tensor::zeros((n, d), DType::F32, &self.device).map_err(candle)?;
            let mut layer_used = BTreeSet::new();
            for (chosen, (rows, weights)) in assigned.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                layer_used.insert(chosen as u32);
                let weights_of = expert(index, chosen as u32)?;
                let m = rows.len();
                let rows = Tensor::from_vec(rows, m, &self.device).map_err(candle)?;
                let weights = Tensor::from_vec(weights, (m, 1), &self.device).map_err(candle)?;
                let y = h
                    .index_select(&rows, 0)
                    .and_then(|input| weights_of.forward(&input))
                    .and_then(|y| y.broadcast_mul(&weights))
                    .map_err(candle)?;
                out = out.index_add(&rows, &y, 0).map_err(candle)?;
            }
            used.push(layer_used);
            x = (x + out).map_err(candle)?;
        }
        let last = x.narrow(0, n - 1, 1).map_err(candle)?;
        let logits = rms_norm(&last, &self.final_norm)
            .and_then(|normed| normed.matmul(&self.head))
            .and_then(|logits| logits.flatten_all())
            .and_then(|logits| logits.to_vec1::<f32>())
            .map_err(candle)?;
        Ok(ForwardOutput {
            last_logits: logits,
            experts: used,
        })
    }
}

const RMS_EPS: f64 = 1e-5;

fn rms_norm(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let mean_square = x.sqr()?.mean_keepdim(1)?;
    let scale = (mean_square + RMS_EPS)?.sqrt()?;
    x.broadcast_div(&scale)?.broadcast_mul(weight)
}

fn softmax_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(1)?;
    let exps = x.broadcast_sub(&max)?.exp()?;
    let sum = exps.sum_keepdim(1)?;
    exps.broadcast_div(&sum)
}
