//! The Blyan devnet harness: it will turn a manifest into a running devnet (Docker or local
//! processes), drive load and faults, record histories, check them and compare baselines.
//!
//! Built so far: the command-line front door (`devnet`) and its plan. The manifest, backends,
//! scenario runner, history, checkers, reports and baselines arrive with their issues.

/// The stages a devnet run goes through, in order; each arrives as its own module.
pub const STAGES: [&str; 8] = [
    "manifest", "resolve", "backend", "start", "load", "perturb", "check", "report",
];
