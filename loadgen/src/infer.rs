//! Inference load: `POST /infer` requests with seeded random prompts, closed loop with a fixed
//! number in flight, spread over the devnet's nodes; end-to-end latency percentiles, and with
//! `compare` every request also goes to every other node and their output hashes must match
//! (the determinism check: the same request and experts give bit-identical outputs).

use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::LoadError;

/// What to ask, how much, where.
#[derive(Clone, Debug)]
pub struct InferConfig {
    pub targets: Vec<String>,
    pub requests: u32,
    pub concurrency: usize,
    pub prompt_tokens: usize,
    pub new_tokens: u32,
    /// Prompt token ids are drawn below this.
    pub vocab: u32,
    pub seed: u64,
    pub model: Option<String>,
    /// Send each request to every node and compare the answers.
    pub compare: bool,
    /// Give up on one request after this long.
    pub timeout: Duration,
}

impl InferConfig {
    pub fn validate(&self) -> Result<(), LoadError> {
        let invalid = |field: &str, reason: String| LoadError::Invalid {
            field: field.into(),
            reason,
        };
        if self.targets.is_empty() {
            return Err(invalid("targets", "no node to send to".into()));
        }
        if !(1..=1_000_000).contains(&self.requests) {
            return Err(invalid(
                "--requests",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err(invalid("--concurrency", "must be between 1 and 256".into()));
        }
        if !(1..=4096).contains(&self.prompt_tokens) {
            return Err(invalid(
                "--prompt-tokens",
                "must be between 1 and 4096".into(),
            ));
        }
        if self.vocab == 0 {
            return Err(invalid("--vocab", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What an inference load run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InferReport {
    pub requests: u32,
    pub ok: u32,
    pub errors: Vec<String>,
    pub latency: Percentiles,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub tokens_per_s: f64,
    /// Requests compared across every node, and those whose answers differed.
    pub compared: u32,
    pub mismatches: Vec<String>,
}

/// One request's end: (latency, tokens generated) or why it failed, and a mismatch seen.
type Outcome = (Result<(Duration, usize), String>, Option<String>);

/// The prompt of request `index`: a pure function of the seed.
pub fn prompt(config: &InferConfig, index: u32) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed ^ (u64::from(index) << 20));
    (0..config.prompt_tokens)
        .map(|_| rng.gen_range(0..config.vocab))
        .collect()
}

async fn ask(
    client: &reqwest::Client,
    target: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let response = client
        .post(format!("{target}/infer"))
        .json(body)
        .send()
        .await
        .map_err(|error| format!("{target}: {error}"))?;
    let status = response.status();
    let answer: serde_json::Value = response
        .json()
        .await
        .map_err(|error| format!("{target}: {status}: {error}"))?;
    if !status.is_success() {
        return Err(format!("{target}: {status}: {answer}"));
    }
    Ok(answer)
}

/// Asks every other target the same request: the first whose answer differs from `answer`
/// (tokens, experts or output hash), or does not come, is the mismatch.
async fn compare(
    client: &reqwest::Client,
    config: &InferConfig,
    index: u32,
    target: &str,
    body: &serde_json::Value,
    answer: &serde_json::Value,
) -> Option<String> {
    for other in config.targets.iter().filter(|other| *other != target) {
        match ask(client, other, body).await {
            Ok(theirs)
                if theirs["output_hash"] == answer["output_hash"]
                    && theirs["tokens"] == answer["tokens"]
                    && theirs["experts"] == answer["experts"] => {}
            Ok(theirs) => {
                return Some(format!(
                    "request {index}: {target} answered {} {}, {other} answered {} {}",
                    answer["tokens"],
                    answer["output_hash"],
                    theirs["tokens"],
                    theirs["output_hash"]
                ))
            }
            Err(error) => return Some(format!("request {index}: {error}")),
        }
    }
    None
}

/// Runs the inference load to the end (bounded by `requests` and each request's timeout).
pub async fn run_infer(config: &InferConfig) -> Result<InferReport, LoadError> {
    config.validate()?;
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|error| LoadError::Node {
            url: config.targets[0].clone(),
            reason: error.to_string(),
        })?;
    let started = Instant::now();
    let outcomes: Vec<Outcome> = futures::stream::iter(0..config.requests)
        .map(|index| {
            let client = client.clone();
            async move {
                let mut body = serde_json::json!({
                    "tokens": prompt(config, index),
                    "max_new_tokens": config.new_tokens,
                });
                if let Some(model) = &config.model {
                    body["model"] = serde_json::json!(model);
                }
                let target = &config.targets[index as usize % config.targets.len()];
                let sent = Instant::now();
                let answer = match ask(&client, target, &body).await {
                    Ok(answer) => answer,
                    Err(error) => return (Err(error), None),
                };
                let latency = sent.elapsed();
                let tokens = answer["tokens"].as_array().map_or(0, Vec::len);
                let mismatch = if config.compare {
                    compare(&client, config, index, target, &body, &answer).await
                } else {
                    None
                };
                (Ok((latency, tokens)), mismatch)
            }
        })
        .buffer_unordered(config.concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let mut report = InferReport {
        requests: config.requests,
        seconds,
        ..InferReport::default()
    };
    let mut tokens = 0usize;
    for (outcome, mismatch) in outcomes {
        match outcome {
            Ok((latency, generated)) => {
                report.ok += 1;
                tokens += generated;
                histogram.saturating_record(latency.as_micros() as u64);
                if config.compare {
                    report.compared += 1;
                }
            }
            Err(error) => {
                if report.errors.len() < 20 {
                    report.errors.push(error);
                }
            }
        }
        if let Some(mismatch) = mismatch {
            report.mismatches.push(mismatch);
        }
    }
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    report.latency = Percentiles {
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
    };
    report.requests_per_s = f64::from(report.ok) / seconds;
    report.tokens_per_s = tokens as f64 / seconds;
    Ok(report)
}
