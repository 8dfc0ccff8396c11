//! The run engine, `devnet run` as a library call: the manifest's devnet started through its
//! backend, recorded while its faults, load and inference requests run, stopped, and its
//! history checked. Tests call [`run`] directly; the binary only parses flags and prints.
//!
//! A run directory holds `run.json` (what ran), `nodes/*.jsonl` and `events.jsonl` (the
//! history, from `crate::recorder`), `timeline.json` (each fault and its effect),
//! `load.json` and `inference.jsonl` when the manifest asks for them, and the report
//! (`results.json`, `junit.xml`, `report.html`).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{self, Backend, BackendError, BackendKind, UpSettings};
use crate::history::{HistoryError, RunInfo, RunNode};
use crate::manifest::{Manifest, ManifestError};
use crate::recorder::{now_ms, Recorder};
use crate::report::{ReportError, RunResults};
use crate::scenario::{Action, Active, Planned, ScenarioError};
use crate::testnet::record::DevnetState;
use crate::timeline;

pub mod inject;

use inject::Injector;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("load: {0}")]
    Load(#[from] blyan_loadgen::LoadError),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to run, beyond the manifest.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub manifest_path: PathBuf,
    /// Replaces every random nemesis' seed.
    pub seed: Option<u64>,
    /// The run directory (default: `runs/<name>-<unix time>`); must not hold a run yet.
    pub out: Option<PathBuf>,
    /// Seconds to record (default: the manifest's `duration_s`); 1 to 3600.
    pub duration_s: Option<u64>,
    /// Milliseconds between polls of every node; 50 to 10,000.
    pub poll_ms: u64,
    /// Replaces the manifest's backend.
    pub backend: Option<BackendKind>,
    /// Leave the devnet running afterwards.
    pub keep: bool,
    /// Where devnets live, the node binary, ports; `wait_height` is 1 for a run.
    pub settings: UpSettings,
    /// A rolling upgrade (`devnet run --old-build`): half the validators start from this
    /// binary and are upgraded one by one to `settings.node_bin` during the run.
    pub old_build: Option<PathBuf>,
    /// A replay (`devnet run --replay RUN_DIR`): that run's timeline. Each planned fault starts
    /// at the time the recorded one came into force, for its planned duration.
    pub replay: Option<Vec<crate::timeline::Entry>>,
}

/// A finished run: where it is and what its checks said.
#[derive(Debug)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub results: RunResults,
}

/// Everything decided before anything starts.
struct Prepared {
    manifest: Manifest,
    text: String,
    schedule: Vec<Planned>,
    duration: Duration,
    out: PathBuf,
    /// Nodes that start from another binary (`--old-build`).
    node_bins: Vec<(String, PathBuf)>,
    /// `--seed`, recorded for a replay.
    fault_seed: Option<u64>,
}

/// Reads and checks the manifest against the backend (which `auto` resolves to first), the
/// duration and the run directory; nothing is started or created.
fn prepare(
    options: &RunOptions,
    mut manifest: Manifest,
    backend: BackendKind,
) -> Result<Prepared, RunError> {
    let path = &options.manifest_path;
    manifest.backend = backend;
    manifest.validate(&path.display().to_string())?;
    let duration = options
        .duration_s
        .unwrap_or(manifest.duration_s.max(0) as u64);
    if !(1..=3600).contains(&duration) {
        return Err(RunError::Invalid(format!(
            "duration: {duration} s; must be between 1 and 3600 (the manifest's duration_s or --duration)"
        )));
    }
    if !(50..=10_000).contains(&options.poll_ms) {
        return Err(RunError::Invalid(format!(
            "--poll-ms: {}; must be between 50 and 10000",
            options.poll_ms
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut node_bins = Vec::new();
    if let Some(old) = &options.old_build {
        for name in rolling_upgrade(&mut manifest, old, &options.settings.node_bin, duration)? {
            node_bins.push((name, old.clone()));
        }
    }
    // The schedule, from the manifest and the seed only (and a replayed run's times).
    let mut schedule = manifest.fault_schedule(options.seed)?;
    if let Some(recorded) = &options.replay {
        replay_times(&mut schedule, recorded)?;
        schedule.sort_by_key(|step| step.at);
    }
    let out = options.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("{}-{}", manifest.name, now_ms() / 1000))
    });
    if out.join("run.json").exists() {
        return Err(RunError::Invalid(format!(
            "{} already holds a run; choose another --out",
            out.display()
        )));
    }
    Ok(Prepared {
        manifest,
        text,
        schedule,
        duration: Duration::from_secs(duration),
        out,
        node_bins,
        fault_seed: options.seed,
    })
}

/// Moves each planned fault to the time the recorded one came into force: the entries are
/// matched in order by kind and label (heals and notes have none and keep their times). A
/// recorded fault that the schedule does not plan, or a planned one never recorded, means the
/// manifest or seed differ from the run's: refused.
pub fn replay_times(
    schedule: &mut [Planned],
    recorded: &[crate::timeline::Entry],
) -> Result<(), RunError> {
    let mut entries = recorded.iter();
    let recorded_kind = |step: &&mut Planned| !matches!(step.action, Action::Heal | Action::Resume);
    for step in schedule.iter_mut().filter(recorded_kind) {
        let Some(entry) = entries.next() else {
            return Err(RunError::Invalid(format!(
                "--replay: the recorded run has no fault {:?} (planned at {:.1} s);                  its manifest or seed differ",
                step.label,
                step.at.as_secs_f64()
            )));
        };
        if entry.kind != step.kind || entry.label != step.label {
            return Err(RunError::Invalid(format!(
                "--replay: the recorded run's next fault is {:?} ({}), this schedule's {:?}                  ({}); its manifest or seed differ",
                entry.label, entry.kind, step.label, step.kind
            )));
        }
        // The duration stays the planned one (the same in both runs): a fault is ended up to
        // a poll late, so a measured duration would grow with every replay of a replay.
        step.at = Duration::from_secs_f64(entry.started_s.max(0.0));
    }
    if let Some(extra) = entries.next() {
        return Err(RunError::Invalid(format!(
            "--replay: the recorded fault {:?} at {:.1} s is not in this schedule",
            extra.label, extra.started_s
        )));
    }
    Ok(())
}

/// `--old-build`: the first half of the validators (at least one) start from `old`, and an
/// `upgrade` fault moves each to `new` in turn, spread over the middle half of the run. The
/// upgrades go after the manifest's own faults, which still run.
fn rolling_upgrade(
    manifest: &mut Manifest,
    old: &Path,
    new: &Path,
    duration: u64,
) -> Result<Vec<String>, RunError> {
    if !old.is_file() {
        return Err(RunError::Invalid(format!(
            "--old-build: {}: no such binary",
            old.display()
        )));
    }
    let can = manifest.backend.capabilities();
    if !can.is_none_or(|can| can.host_binaries) {
        return Err(RunError::Invalid(format!(
            "--old-build: a rolling upgrade replaces node binaries, which the {} backend does \
             not run from this host; use --backend process or docker",
            manifest.backend
        )));
    }
    let validators: Vec<String> = manifest
        .resolve()
        .into_iter()
        .filter(|node| node.role == crate::manifest::Role::Validator)
        .map(|node| node.name)
        .collect();
    let half = (validators.len() / 2).clamp(1, validators.len().max(1));
    let old_nodes = validators[..half.min(validators.len())].to_vec();
    let count = old_nodes.len();
    for (k, name) in old_nodes.iter().enumerate() {
        let share = if count == 1 {
            0.5
        } else {
            0.25 + 0.5 * k as f64 / (count - 1) as f64
        };
        manifest
            .faults
            .push(crate::faults::Fault::Upgrade(crate::faults::Upgrade {
                at_s: duration as f64 * share,
                nodes: vec![name.clone()],
                binary: Some(new.display().to_string()),
            }));
    }
    Ok(old_nodes)
}

/// Starts the manifest's devnet, records it while the faults and the load run, stops it
/// (unless `keep`), and checks and reports the recorded history. `say` gets one line per
/// step (the devnet up, each fault, heights every 5 s).
pub fn run(
    options: &RunOptions,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<RunOutcome, RunError> {
    let manifest = Manifest::load(&options.manifest_path)?;
    let wanted = options.backend.unwrap_or(manifest.backend);
    // The backend is known before anything starts, so that a fault it cannot do is refused
    // with its field before a file, process or container is made.
    let (backend, note) = backend::open(wanted, &options.settings.base)?;
    if let Some(note) = note {
        say(format!("note: {note}"));
    }
    let prepared = prepare(options, manifest, backend.kind())?;
    backend::check(backend.kind(), &prepared.manifest, options.settings.force)?;
    let out = &prepared.out;
    std::fs::create_dir_all(out).map_err(io(out))?;
    say(format!(
        "starting {} nodes",
        prepared.manifest.resolve().len()
    ));
    let mut settings = options.settings.clone();
    settings.wait_height = 1;
    settings.node_bins = prepared.node_bins.clone();
    let started = backend::start(backend.as_ref(), &prepared.manifest, &settings, &|_| {})?;
    if let (Some(spec), Some(took)) = (&prepared.manifest.inference, started.model_installed) {
        say(format!(
            "model {:?} generated on {} and registered on every node in {:.1} s",
            spec.model(),
            spec.node(),
            took.as_secs_f64()
        ));
    }
    let mut state = started.state;
    let joiners = prepared.manifest.joiners();
    let later = if joiners.is_empty() {
        String::new()
    } else {
        format!("; {} join later", joiners.join(", "))
    };
    say(format!(
        "{} nodes up ({} backend): every node at height 1 after {:.1} s{later}",
        state.nodes.len() - joiners.len(),
        state.backend,
        started.reached.as_secs_f64()
    ));
    let mut info = run_info(&prepared, &state, started.reached);
    write_info(out, &info)?;
    let outcome = record(
        backend.as_ref(),
        &prepared,
        options,
        &mut state,
        &mut info,
        say,
    );
    info.ended_ms = Some(now_ms());
    write_info(out, &info)?;
    if options.keep {
        say(format!(
            "devnet {} left running (devnet down --name {})",
            state.name, state.name
        ));
    } else {
        let grace = Duration::from_secs(10);
        backend.down(&options.settings.base, &state.name, grace)?;
    }
    outcome?;
    let history = crate::history::History::load(out)?;
    let results = crate::report::write(out, &history)?;
    Ok(RunOutcome {
        dir: out.clone(),
        results,
    })
}

/// `run.json` as the run starts.
fn run_info(prepared: &Prepared, state: &DevnetState, first_block: Duration) -> RunInfo {
    let manifest = &prepared.manifest;
    let resolved = manifest.resolve();
    // The repository the harness was built from, when it is still there.
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    RunInfo {
        name: manifest.name.clone(),
        chain_id: state.chain_id.clone(),
        seed: manifest.seed,
        backend: state.backend.to_string(),
        git_commit: crate::bench::Fingerprint::here(
            state.backend.name(),
            repository.filter(|root| root.join("Cargo.toml").is_file()),
        )
        .git_commit,
        manifest: prepared.text.clone(),
        nodes: state
            .nodes
            .iter()
            .map(|node| RunNode {
                name: node.moniker.clone(),
                validator_key: if node.validator {
                    node.validator_key.clone()
                } else {
                    String::new()
                },
                power: resolved
                    .iter()
                    .find(|r| r.name == node.moniker)
                    .map_or(0, |r| if node.validator { r.stake } else { 0 }),
                byzantine: manifest.byzantine_label(&node.moniker),
            })
            .collect(),
        started_ms: now_ms(),
        ended_ms: None,
        liveness_heights: manifest.checks.liveness_heights.max(1) as u64,
        liveness_within_s: manifest.checks.liveness_within_s.max(1) as u64,
        time_to_first_block_s: Some(first_block.as_secs_f64()),
        fault_seed: prepared.fault_seed,
    }
}

fn write_info(out: &Path, info: &RunInfo) -> Result<(), RunError> {
    let path = out.join("run.json");
    let text = serde_json::to_string_pretty(info).expect("run.json serialises") + "\n";
    std::fs::write(&path, text).map_err(io(&path))
}

type LoadThread = JoinHandle<Result<blyan_loadgen::Report, RunError>>;
type InferenceThread = JoinHandle<Result<crate::inference::DriveReport, HistoryError>>;

/// With `[load]`, one bounded loadgen run beside the recording, from a thread of its own.
fn start_load(
    prepared: &Prepared,
    state: &DevnetState,
    base: &Path,
    recorder: &mut Recorder,
) -> Result<Option<LoadThread>, RunError> {
    let rate = prepared.manifest.load.rate;
    if rate <= 0 {
        return Ok(None);
    }
    let accounts = blyan_loadgen::read_accounts(
        &crate::testnet::record::devnet_dir(base, &state.name).join("accounts.json"),
    )?;
    let config = blyan_loadgen::LoadConfig::new(
        &state.chain_id,
        state.nodes.iter().map(|n| n.api.clone()).collect(),
        rate as f64,
        prepared.duration,
    );
    recorder.event("load_start", &format!("{rate} tx/s"), vec![])?;
    Ok(Some(std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io(Path::new("tokio runtime")))?;
        let progress = std::sync::Arc::new(blyan_loadgen::Progress::default());
        Ok(runtime.block_on(blyan_loadgen::run(&config, &accounts, progress))?)
    })))
}

/// With `[inference]`, the run's seeded requests go to every honest node, spread over the run,
/// from a thread of their own (their answers to `inference.jsonl`).
fn start_inference(
    prepared: &Prepared,
    state: &DevnetState,
    recorder: &mut Recorder,
) -> Result<Option<InferenceThread>, RunError> {
    let manifest = &prepared.manifest;
    let Some(spec) = &manifest.inference else {
        return Ok(None);
    };
    let plan = crate::inference::RequestPlan::new(spec, manifest.seed);
    if plan.prompts.is_empty() {
        return Ok(None);
    }
    let nodes: Vec<(String, String)> = state
        .nodes
        .iter()
        .filter(|node| manifest.byzantine_label(&node.moniker).is_none())
        .map(|node| (node.moniker.clone(), node.api.clone()))
        .collect();
    recorder.event(
        "inference_start",
        &format!(
            "{} seeded requests of {} prompt tokens to {} honest nodes",
            plan.prompts.len(),
            plan.prompts[0].len(),
            nodes.len()
        ),
        nodes.iter().map(|(name, _)| name.clone()).collect(),
    )?;
    let out = prepared.out.clone();
    let total = prepared.duration;
    Ok(Some(std::thread::spawn(move || {
        crate::inference::drive(&out, &nodes, &plan, total)
    })))
}

fn names(state: &DevnetState, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|&i| state.nodes[i].moniker.clone())
        .collect()
}

/// The recording in progress: the faults in force and the timeline so far.
struct Recording<'a> {
    state: &'a mut DevnetState,
    recorder: Recorder,
    injector: Injector<'a>,
    entries: Vec<timeline::Entry>,
    active: Vec<Active>,
    started: Instant,
    say: &'a (dyn Fn(String) + Send + Sync),
    /// The drive loop's latest poll: when, and every node's height.
    last_poll: Option<(Instant, Vec<Option<u64>>)>,
}

impl Recording<'_> {
    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Ends `faults`: each keeps the heights reached while it was in force, from one poll of
    /// every node (asked in parallel) just before they are undone.
    fn finish(&mut self, faults: Vec<Active>) -> Result<(), RunError> {
        if faults.is_empty() {
            return Ok(());
        }
        // The heights while the faults are still in force: the loop's poll when it is fresh
        // (polling again costs a timeout per node that does not answer, and delays the end).
        let polled = match &self.last_poll {
            Some((at, heights)) if at.elapsed() < Duration::from_secs(1) => heights.clone(),
            _ => self.recorder.poll(self.state)?,
        };
        for fault in faults {
            let step = &fault.step;
            let entry = &mut self.entries[fault.entry];
            timeline::measure_end(self.state, step, entry, &polled);
            if let Some(links) = step.cut_links(self.state.nodes.len()) {
                let crossing = self.recorder.cut_undo(self.state, &step.label, &links)?;
                for (from, to) in crossing {
                    (self.say)(format!(
                        "warning: {} still holds a connection to {} across the cut ({})",
                        self.state.nodes[from].moniker, self.state.nodes[to].moniker, step.label
                    ));
                }
            }
            self.injector.end(self.state, step)?;
            if step.action == Action::PowerLoss {
                self.restarted(step, fault.entry)?;
            }
            let nodes = names(self.state, &step.nodes);
            self.recorder.event("fault_end", &step.label, nodes)?;
            let now = self.now_s();
            timeline::end(self.state, &mut self.entries[fault.entry], now);
            (self.say)(format!(
                "t={now:.1}s healed: {} ({})",
                step.label, self.entries[fault.entry].effect.summary
            ));
        }
        Ok(())
    }

    /// After a power loss: the height each target started again from (its `/status`),
    /// recorded beside what it had acknowledged before.
    fn restarted(&mut self, step: &Planned, entry: usize) -> Result<(), RunError> {
        let mut stored_after = Vec::new();
        for (k, &node) in step.nodes.iter().enumerate() {
            let stored = timeline::started_height(self.state, node);
            // A node that did not answer just before had acknowledged nothing to check.
            if let Some(acknowledged) = self.entries[entry]
                .effect
                .acknowledged
                .get(k)
                .copied()
                .flatten()
            {
                self.recorder.restarted(node, acknowledged, stored)?;
            }
            stored_after.push(stored);
        }
        self.entries[entry].effect.stored_after = stored_after;
        Ok(())
    }

    /// Carries out one step of the schedule.
    fn step(&mut self, planned: &Planned) -> Result<(), RunError> {
        let nodes = names(self.state, &planned.nodes);
        match planned.action {
            Action::Heal | Action::Resume => {
                let (ended, keep): (Vec<Active>, Vec<Active>) =
                    self.active.drain(..).partition(|a| {
                        planned.action == Action::Heal
                            || (a.step.action == Action::Pause
                                && a.step.nodes.iter().any(|n| planned.nodes.contains(n)))
                    });
                self.active = keep;
                self.finish(ended)?;
                self.recorder.event("note", &planned.label, nodes)?;
            }
            Action::Restart | Action::Upgrade | Action::Join => {
                self.recorder
                    .event("fault_start", &planned.label, nodes.clone())?;
                let mut entry = timeline::begin(self.state, planned, self.now_s());
                self.injector.begin(self.state, planned)?;
                self.recorder.event("fault_end", &planned.label, nodes)?;
                timeline::end(self.state, &mut entry, self.now_s());
                self.entries.push(entry);
            }
            _ => {
                // What a node losing power had acknowledged, asked just before.
                let acknowledged: Vec<Option<u64>> = if planned.action == Action::PowerLoss {
                    let now = timeline::heights(self.state);
                    planned.nodes.iter().map(|&i| now[i]).collect()
                } else {
                    Vec::new()
                };
                self.recorder.event("fault_start", &planned.label, nodes)?;
                self.injector.begin(self.state, planned)?;
                // Measured from when the fault is in force: cutting many links of a loaded
                // proxy can take seconds, and the fault then lasts its whole duration (a slow
                // cut once left a 5 s partition in force for ~0 s).
                let in_force = self.started.elapsed();
                if let Some(links) = planned.cut_links(self.state.nodes.len()) {
                    self.recorder
                        .cut_in_force(self.state, &planned.label, &links)?;
                }
                let mut entry = timeline::begin(self.state, planned, in_force.as_secs_f64());
                entry.effect.acknowledged = acknowledged;
                self.entries.push(entry);
                self.active.push(Active {
                    step: planned.clone(),
                    until: planned.duration.map(|d| in_force.max(planned.at) + d),
                    entry: self.entries.len() - 1,
                });
            }
        }
        Ok(())
    }

    /// Polls every node each `poll` until `total` has passed, starting and ending the
    /// schedule's faults on time; every fault is ended before it returns.
    fn drive(
        &mut self,
        schedule: &[Planned],
        total: Duration,
        poll: Duration,
    ) -> Result<(), RunError> {
        let mut next = 0;
        let mut last_print = Instant::now();
        while self.started.elapsed() < total {
            let elapsed = self.started.elapsed();
            let (done, keep): (Vec<Active>, Vec<Active>) = self
                .active
                .drain(..)
                .partition(|a| a.until.is_some_and(|until| elapsed >= until));
            self.active = keep;
            self.finish(done)?;
            while next < schedule.len() && schedule[next].at <= elapsed {
                self.step(&schedule[next])?;
                (self.say)(format!(
                    "t={:.1}s fault: {}",
                    elapsed.as_secs_f64(),
                    schedule[next].label
                ));
                next += 1;
            }
            let heights = self.recorder.poll(self.state)?;
            self.last_poll = Some((Instant::now(), heights.clone()));
            let now = self.now_s();
            timeline::watch_resume(&mut self.entries, &heights, now);
            if last_print.elapsed() >= Duration::from_secs(5) {
                last_print = Instant::now();
                let shown: Vec<String> = heights
                    .iter()
                    .map(|h| h.map_or("-".into(), |h| h.to_string()))
                    .collect();
                (self.say)(format!(
                    "t={:.0}s heights {}",
                    elapsed.as_secs_f64(),
                    shown.join(" ")
                ));
            }
            std::thread::sleep(poll);
        }
        let active = std::mem::take(&mut self.active);
        self.finish(active)
    }
}

/// Records the devnet while the schedule, the load and the inference requests run.
fn record(
    backend: &dyn Backend,
    prepared: &Prepared,
    options: &RunOptions,
    state: &mut DevnetState,
    info: &mut RunInfo,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<(), RunError> {
    let out = &prepared.out;
    let mut recorder = Recorder::create(out, state)?;
    let injector = Injector::new(backend, state);
    let prepared_at = Instant::now();
    let load = start_load(prepared, state, &options.settings.base, &mut recorder)?;
    let inference = start_inference(prepared, state, &mut recorder)?;
    // The run's clock starts here: fault times and the report's axes count from now.
    info.started_ms = now_ms();
    write_info(out, info)?;
    say(format!(
        "recording (set up in {:.1} s)",
        prepared_at.elapsed().as_secs_f64()
    ));
    let mut recording = Recording {
        state,
        recorder,
        injector,
        entries: Vec::new(),
        active: Vec::new(),
        started: Instant::now(),
        say,
        last_poll: None,
    };
    let poll = Duration::from_millis(options.poll_ms);
    recording.drive(&prepared.schedule, prepared.duration, poll)?;
    let Recording {
        state,
        mut recorder,
        mut entries,
        ..
    } = recording;
    let path = out.join("timeline.json");
    timeline::write(out, &mut entries).map_err(io(&path))?;
    recorder.poll(state)?;
    recorder.stake(state)?;
    if let Some(inference) = inference {
        let label = match inference.join() {
            Ok(Ok(report)) => format!(
                "{} requests sent to every honest node: {} answers, {} without one",
                report.requests, report.answers, report.errors
            ),
            Ok(Err(error)) => format!("failed: {error}"),
            Err(_) => "the inference thread panicked".to_string(),
        };
        recorder.event("inference_end", &label, vec![])?;
    }
    if let Some(load) = load {
        end_load(load, out, &mut recorder)?;
    }
    Ok(())
}

/// Waits for the load thread; its report goes to `load.json` and the history.
fn end_load(load: LoadThread, out: &Path, recorder: &mut Recorder) -> Result<(), RunError> {
    match load.join() {
        Ok(Ok(report)) => {
            let line = format!(
                "sent {}, committed {}, commit p50 {:.1} ms, p99 {:.1} ms",
                report.sent, report.committed, report.commit.p50_ms, report.commit.p99_ms
            );
            recorder.event("load_end", &line, vec![])?;
            let path = out.join("load.json");
            let text = serde_json::to_string_pretty(&report).expect("a load report serialises");
            std::fs::write(&path, text).map_err(io(&path))?;
        }
        Ok(Err(error)) => recorder.event("load_end", &format!("failed: {error}"), vec![])?,
        Err(_) => recorder.event("load_end", "the load thread panicked", vec![])?,
    }
    Ok(())
}
