//! `[inference]`: a mixture-of-experts model generated into one node's home of a running
//! devnet (`blyan-node experts generate`; Docker homes are bind mounts, so this works on both
//! backends); that node registers the files on chain, and the devnet is ready for `POST
//! /infer` once every node lists them. During `devnet run`, [`drive`] sends the run's seeded
//! requests ([`RequestPlan`]) to every honest node and records the answers for the
//! `inference_determinism` check.

use std::path::Path;
use std::time::{Duration, Instant};

use blyan_node::inference::InferResponse;

use crate::history::{HistoryError, InferenceRecord, JsonLines};
use crate::manifest::InferenceSpec;
use crate::process::{http_client, ProcessError};
use crate::testnet::record::DevnetState;

/// Generates the model and waits (at most `timeout`) until every node sees all its files
/// registered on chain; returns how long that took. `progress` hears what is happening.
pub fn install_model(
    state: &DevnetState,
    spec: &InferenceSpec,
    node_bin: &Path,
    timeout: Duration,
    progress: &mut dyn FnMut(String),
) -> Result<Duration, ProcessError> {
    let started = Instant::now();
    let on = spec.node();
    let node = state
        .nodes
        .iter()
        .find(|node| node.moniker == on)
        .ok_or_else(|| ProcessError::Invalid(format!("inference.on: no node named {on:?}")))?;
    progress(format!(
        "generating model {:?} into {}",
        spec.model(),
        node.moniker
    ));
    let output = std::process::Command::new(node_bin)
        .args(["experts", "generate", "--home"])
        .arg(&node.home)
        .args(spec.generate_args())
        .output()
        .map_err(|source| ProcessError::Io {
            path: node_bin.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        return Err(ProcessError::Invalid(format!(
            "blyan-node experts generate failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let files = spec.files() as u64;
    let client = http_client();
    let deadline = Instant::now() + timeout;
    loop {
        let registered: Vec<u64> = state
            .nodes
            .iter()
            .map(|node| {
                client
                    .get(format!("{}/experts", node.api))
                    .send()
                    .and_then(|response| response.json::<serde_json::Value>())
                    .ok()
                    .and_then(|body| body["registered"].as_u64())
                    .unwrap_or(0)
            })
            .collect();
        let ready = registered.iter().filter(|count| **count >= files).count();
        progress(format!(
            "{ready}/{} nodes see the {files} model files registered on chain",
            state.nodes.len()
        ));
        if ready == state.nodes.len() {
            return Ok(started.elapsed());
        }
        if Instant::now() >= deadline {
            return Err(ProcessError::Timeout(format!(
                "model files registered per node after {} s: {registered:?} of {files}",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `devnet run`'s seeded inference requests: the same prompts, in the same order, for every
/// run of one manifest and seed.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestPlan {
    pub model: String,
    pub prompts: Vec<Vec<u32>>,
    pub max_new_tokens: u32,
}

impl RequestPlan {
    /// The plan of `spec` (prompt tokens drawn below the model's vocabulary from `seed`).
    pub fn new(spec: &InferenceSpec, seed: u64) -> RequestPlan {
        use rand::{Rng, SeedableRng};
        let (count, prompt, new) = spec.request_shape();
        let vocab = spec.config().map_or(1, |config| config.vocab.max(1)) as u32;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let prompts = (0..count)
            .map(|_| (0..prompt).map(|_| rng.gen_range(0..vocab)).collect())
            .collect();
        RequestPlan {
            model: spec.model(),
            prompts,
            max_new_tokens: new,
        }
    }
}

/// One node's answer to request `index` of `plan`, as recorded.
fn record(
    node: &str,
    plan: &RequestPlan,
    index: usize,
    answer: Result<InferResponse, String>,
) -> InferenceRecord {
    let (tokens, output_hash, error) = match answer {
        Ok(answer) => (answer.tokens, Some(answer.output_hash.to_hex()), None),
        Err(error) => (Vec::new(), None, Some(error)),
    };
    InferenceRecord {
        at_ms: crate::recorder::now_ms(),
        node: node.to_string(),
        request: index as u32,
        prompt: plan.prompts[index].clone(),
        max_new_tokens: plan.max_new_tokens,
        tokens,
        output_hash,
        error,
    }
}

fn ask_one(
    client: &reqwest::blocking::Client,
    api: &str,
    body: &serde_json::Value,
) -> Result<InferResponse, String> {
    let response = client
        .post(format!("{api}/infer"))
        .json(body)
        .send()
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let text = response.text().map_err(|error| error.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", text.trim()));
    }
    serde_json::from_str(&text).map_err(|error| format!("unreadable answer: {error}"))
}

/// Sends request `index` of `plan` to every node in `nodes` ((name, API URL)) at once and
/// returns what each answered.
pub fn ask_all(
    client: &reqwest::blocking::Client,
    nodes: &[(String, String)],
    plan: &RequestPlan,
    index: usize,
) -> Vec<InferenceRecord> {
    let body = serde_json::json!({
        "model": plan.model,
        "tokens": plan.prompts[index],
        "max_new_tokens": plan.max_new_tokens,
    });
    std::thread::scope(|scope| {
        let asked: Vec<_> = nodes
            .iter()
            .map(|(_, api)| scope.spawn(|| ask_one(client, api, &body)))
            .collect();
        asked
            .into_iter()
            .zip(nodes)
            .map(|(handle, (name, _))| {
                let answer = handle
                    .join()
                    .unwrap_or_else(|_| Err("the request thread panicked".into()));
                record(name, plan, index, answer)
            })
            .collect()
    })
}

/// What [`drive`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriveReport {
    pub requests: usize,
    pub answers: usize,
    pub errors: usize,
}

/// Sends the plan's requests to `nodes`, spread evenly over `duration` from now (request `i`
/// at `i * duration / count`), appending every answer to `out`/inference.jsonl. Bounded: it
/// sends at most the plan's requests and none after `duration`.
pub fn drive(
    out: &Path,
    nodes: &[(String, String)],
    plan: &RequestPlan,
    duration: Duration,
) -> Result<DriveReport, HistoryError> {
    let mut lines = JsonLines::create(&out.join("inference.jsonl"))?;
    let client = reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .expect("a plain HTTP client builds");
    let started = Instant::now();
    let count = plan.prompts.len();
    let mut report = DriveReport::default();
    for index in 0..count {
        let due = duration.mul_f64(index as f64 / count as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        if started.elapsed() >= duration {
            break;
        }
        for record in ask_all(&client, nodes, plan, index) {
            if record.output_hash.is_some() {
                report.answers += 1;
            } else {
                report.errors += 1;
            }
            lines.append(&record)?;
        }
        report.requests += 1;
    }
    Ok(report)
}

/// How long one node may take to answer one request (a paused node never answers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
