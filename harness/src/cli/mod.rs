//! The `devnet` commands, one file per group: `devnet.rs` (up, down, status, logs, image,
//! nat-probe), `files.rs` (manifest, plan, compose, render), `bench.rs` (bench, compare, trend), `ab.rs` (ab),
//! `run.rs` (run, check), `sim.rs` (sim). The work is done by the library; these parse flags and print.

pub mod ab;
pub mod bench;
pub mod bisect;
pub mod devnet;
pub mod files;
pub mod run;
pub mod sim;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use blyan_harness::backend::BackendKind;
use blyan_harness::manifest::Manifest;
use clap::Args;

#[derive(Args)]
pub struct NameArgs {
    /// Devnet name (default: the manifest's name, or "default").
    #[arg(long)]
    name: Option<String>,
    /// Directory holding devnets.
    #[arg(long, default_value = ".devnet", value_name = "DIR")]
    base: PathBuf,
    /// Print JSON instead of a table (status).
    #[arg(long)]
    json: bool,
}

impl NameArgs {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn load_manifest(path: Option<&Path>, name: Option<&str>) -> Result<Manifest> {
    let mut manifest = match path {
        Some(path) => Manifest::load(path)?,
        None => Manifest::default_named(name.unwrap_or("default")),
    };
    if let Some(name) = name {
        manifest.name = name.to_string();
    }
    Ok(manifest)
}

pub(crate) fn parse_backend(text: &str) -> Result<BackendKind> {
    BackendKind::parse(text).map_err(|reason| anyhow::anyhow!("--backend: {reason}"))
}

/// The repository the harness was built from, when it is still there (to run cargo in).
pub(crate) fn repository_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    root.join("Cargo.toml").is_file().then_some(root)
}
