//! The same forward pass as [`super::model::Model::forward`], written as plain loops over
//! `Vec<f32>` read with the `safetensors` crate alone (no candle), as an independent check of
//! the candle path. Slow; for tests and the benchmark's correctness line only.

use std::collections::{BTreeSet, HashMap};

use super::model::{route, MoeConfig};
use super::InferenceError;

type Matrix = (Vec<f32>, usize, usize);

fn tensors(bytes: &[u8]) -> Result<HashMap<String, Matrix>, InferenceError> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|error| InferenceError::Weights(error.to_string()))?;
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        let shape = view.shape();
        let (rows, cols) = match shape {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => return Err(InferenceError::Weights(format!("{name}: shape {shape:?}"))),
        };
        out.insert(name, (values, rows, cols));
    }
    Ok(out)
}

fn get<'a>(map: &'a HashMap<String, Matrix>, name: &str) -> &'a Matrix {
    map.get(name).unwrap_or_else(|| panic!("tensor {name}"))
}

/// `x` (one row) times `w` (`[in, out]`).
fn vec_mat(x: &[f32], w: &Matrix) -> Vec<f32> {
    let (values, rows, cols) = w;
    assert_eq!(x.len(), *rows);
    let mut out = vec![0f32; *cols];
    for (i, xi) in x.iter().enumerate() {
        for j in 0..*cols {
            out[j] += xi * values[i * cols + j];
        }
    }
    out
}

fn rms_norm(x: &[f32], weight: &[f32]) -> Vec<f32> {
    let mean_square = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = (mean_square + 1e-5).sqrt();
    x.iter().zip(weight).map(|(v, w)| v / scale * w).collect()
}

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// The logits of the last position and the experts each layer used.
pub fn forward(
    base: &[u8],
    experts: &HashMap<(usize, u32), Vec<u8>>,
    config: &MoeConfig,
    tokens: &[u32],
) -> Result<(Vec<f32>, Vec<BTreeSet<u32>>), InferenceError> {
    let weights = tensors(base)?;
    let d = config.dim;
    let n = tokens.len();
    let embed = get(&weights, "embed");
    let pos = get(&weights, "pos");
    let mut x: Vec<Vec<f32>> = tokens
        .iter()
        .enumerate()
        .map(|(p, t)| {
            (0..d)
                .map(|j| embed.0[*t as usize * d + j] + pos.0[p * d + j])
                .collect()
        })
        .collect();
    let mut used = Vec::new();
    for layer in 0..config.layers {
        let name = |part: &str| format!("l{layer}.{part}");
        let attn_norm = &get(&weights, &name("attn_norm")).0;
        let h: Vec<Vec<f32>> = x.iter().map(|row| rms_norm(row, attn_norm)).collect();
        let q: Vec<Vec<f32>> = h
            .iter()
            .map(|r| vec_mat(r, get(&weights, &name("wq"))))
            .collect();
        let k: Vec<Vec<f32>> = h
            .iter()
            .map(|r| vec_mat(r, get(&weights, &name("wk"))))
            .collect();
        let v: Vec<Vec<f32>> = h
            .iter()
            .map(|r| vec_mat(r, get(&weights, &name("wv"))))
            .collect();
        for i in 0..n {
            let scores: Vec<f32> = (0..=i)
                .map(|j| {
                    q[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            let mut mixed = vec![0f32; d];
            for (j, e) in exps.iter().enumerate() {
                for c in 0..d {
                    mixed[c] += e / sum * v[j][c];
                }
            }
            let projected = vec_mat(&mixed, get(&weights, &name("wo")));
            for c in 0..d {
                x[i][c] += projected[c];
            }
        }
        let ffn_norm = &get(&weights, &name("ffn_norm")).0;
        let mut layer_used = BTreeSet::new();
        for row in x.iter_mut() {
            let h = rms_norm(row, ffn_norm);
            let logits = vec_mat(&h, get(&weights, &name("router")));
            for (chosen, weight) in route(&logits, config.top_k) {
                layer_used.insert(chosen);
                let bytes = experts.get(&(layer, chosen)).ok_or_else(|| {
                    InferenceError::Weights(format!("reference: expert l{layer}/e{chosen}"))
                })?;
                let e = tensors(bytes)?;
                let a = vec_mat(&h, get(&e, "w1"));
                let b = vec_mat(&h, get(&e, "w3"));
                let hidden: Vec<f32> = a.iter().zip(&b).map(|(a, b)| silu(*a) * b).collect();
                let y = vec_mat(&hidden, get(&e, "w2"));
                for c in 0..d {
                    row[c] += weight * y[c];
                }
            }
        }
        used.push(layer_used);
    }
    let last = rms_norm(&x[n - 1], &get(&weights, "final_norm").0);
    Ok((vec_mat(&last, get(&weights, "head")), used))
}
