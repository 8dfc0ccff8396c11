//! The process backend behind the [`Backend`] trait: `blyan-node` processes on 127.0.0.1
//! (`crate::process` writes, starts and stops them); node faults are signals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    each, logs_error, Backend, BackendError, BackendKind, DownSummary, LogOptions, UpSettings,
};
use crate::manifest::{Manifest, MAX_NODES};
use crate::process::{self, UpOptions};
use crate::scenario::{Action, Planned, ScenarioError};
use crate::testnet::record::DevnetState;

/// Local `blyan-node` processes of the devnets under `base`.
pub struct Processes {
    pub base: PathBuf,
}

fn signal(state: &DevnetState, index: usize, signal: i32) -> Result<(), String> {
    let pid = state.nodes[index].pid.ok_or("not running")?;
    // SAFETY: kill(2) on a pid this devnet started; no memory is touched.
    if unsafe { libc::kill(pid as i32, signal) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

/// Node `index`'s data directory (on its tmpfs when a disk fault targets it).
fn data_dir(state: &DevnetState, index: usize) -> PathBuf {
    blyan_node::home::Home::new(&state.nodes[index].home).data()
}

/// A power loss of node `i`: SIGKILL, then its FUSE layer drops every unsynced write and
/// unmounts (which also drops the kernel's cache of it), then it is mounted again over what was
/// synced; the node stays down until the fault ends.
fn power_loss(this: &Processes, state: &mut DevnetState, i: usize) -> Result<(), String> {
    let pid = state.nodes[i]
        .lazyfs_pid
        .ok_or("its data directory is not on blyan-lazyfs")?;
    signal(state, i, libc::SIGKILL)?;
    let node = state.nodes[i].pid.unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // Gone means its files are closed too: a process loses its command line before its files.
    while !process::has_exited(node) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let data = data_dir(state, i);
    crate::disk::end_lazyfs(pid, libc::SIGUSR1, &data)?;
    let node_bin = state.nodes[i].bin.clone().unwrap_or(state.node_bin.clone());
    state.nodes[i].lazyfs_pid = Some(crate::disk::mount_lazyfs(&node_bin, &data)?);
    crate::testnet::record::save_state(&this.base, state).map_err(|e| e.to_string())
}

/// SIGTERM, then SIGKILL when the node has not exited within 5 s.
fn stop(state: &DevnetState, index: usize) -> Result<(), String> {
    signal(state, index, libc::SIGTERM)?;
    let pid = state.nodes[index].pid.unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while process::is_node_process(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if process::is_node_process(pid) {
        signal(state, index, libc::SIGKILL)?;
    }
    Ok(())
}

/// What the process machinery needs beyond the resolved testnet: where it lives, its ports
/// (checked free before anything is written) and how long to wait.
fn up_options(manifest: &Manifest, settings: &UpSettings) -> UpOptions {
    let nodes = manifest.resolve();
    let mut options = UpOptions::new(
        &manifest.name,
        &settings.base,
        nodes.len(),
        settings.node_bin.clone(),
    );
    options.chain_id = manifest.chain_id.clone();
    options.api_port_base = settings.api_port_base;
    options.p2p_port_base = settings.p2p_port_base;
    if manifest.network.proxy {
        options.proxy_port = Some(settings.p2p_port_base.saturating_add(MAX_NODES as u16));
    }
    options.wait_height = settings.wait_height;
    options.wait_timeout = settings.wait_timeout;
    options.log_level = settings.log_level.clone();
    options.node_bins = settings.node_bins.clone();
    options.late = manifest.joiners();
    options.tmpfs = manifest.disk_nodes();
    options.lazyfs = manifest.lazyfs_nodes();
    options
}

impl Backend for Processes {
    fn kind(&self) -> BackendKind {
        BackendKind::Process
    }

    fn up(
        &self,
        manifest: &Manifest,
        settings: &UpSettings,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<DevnetState, BackendError> {
        let options = up_options(manifest, settings);
        let node = |index: usize| process::loopback_node(&options, index);
        let plan = crate::testnet::resolve(
            manifest,
            &crate::testnet::Addressing {
                backend: BackendKind::Process,
                node: &node,
                proxy: process::loopback_proxy(&options),
                log_level: &settings.log_level,
                node_bin: &settings.node_bin,
                genesis_time_ms: None,
            },
        );
        progress(format!("starting {} node processes", options.nodes));
        let wait_height = options.wait_height;
        Ok(process::up_plan(&options, &plan, |heights| {
            let ready = heights
                .iter()
                .filter(|h| h.is_some_and(|h| h >= wait_height))
                .count();
            let answering = heights.iter().filter(|h| h.is_some()).count();
            progress(format!(
                "{answering}/{} nodes answering, {ready} at height >= {wait_height}",
                heights.len()
            ));
        })?)
    }

    fn down(&self, base: &Path, name: &str, grace: Duration) -> Result<DownSummary, BackendError> {
        let report = process::down(base, name, grace)?;
        Ok(format!(
            "devnet {name:?}: {} stopped cleanly, {} killed after {} s, {} were not running",
            report.stopped,
            report.killed,
            grace.as_secs(),
            report.not_running
        ))
    }

    fn begin(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        let nodes = step.nodes.as_slice();
        match step.action {
            Action::Kill => each(self, state, nodes, "kill", |_, state, i| {
                signal(state, i, libc::SIGKILL)
            }),
            Action::Pause => each(self, state, nodes, "pause", |_, state, i| {
                signal(state, i, libc::SIGSTOP)
            }),
            Action::Stop => each(self, state, nodes, "stop", |_, state, i| stop(state, i)),
            Action::Restart => each(self, state, nodes, "restart", |this, state, i| {
                signal(state, i, libc::SIGKILL)?;
                std::thread::sleep(Duration::from_millis(200));
                process::start_node(&this.base, state, i)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            Action::Upgrade => each(self, state, nodes, "upgrade", |this, state, i| {
                let binary = step.binary.clone().ok_or("an upgrade names its binary")?;
                stop(state, i)?;
                state.nodes[i].bin = Some(binary);
                process::start_node(&this.base, state, i)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            Action::DiskFull => each(self, state, nodes, "fill the disk of", |_, state, i| {
                crate::disk::fill(&data_dir(state, i)).map(drop)
            }),
            Action::DiskSlow(ms) => each(self, state, nodes, "slow the disk of", |_, state, i| {
                crate::disk::set_fsync_delay(&data_dir(state, i), ms)
            }),
            Action::PowerLoss => each(self, state, nodes, "cut the power of", |this, state, i| {
                power_loss(this, state, i)
            }),
            Action::Join => each(self, state, nodes, "join", |this, state, i| {
                let sync = ["--state-sync", "--state-sync-wait-s", "30"];
                process::start_node_with(&this.base, state, i, &sync)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            Action::Isolate => Err(ScenarioError::Action {
                action: "isolate".into(),
                node: "-".into(),
                reason: "needs the Docker backend".into(),
            }),
            Action::Heal
            | Action::Resume
            | Action::Cut
            | Action::Toxic
            | Action::OneWay
            | Action::InNode => Ok(()),
        }
    }

    fn end(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        let nodes = step.nodes.as_slice();
        match step.action {
            Action::Kill | Action::Stop => each(self, state, nodes, "start", |this, state, i| {
                process::start_node(&this.base, state, i)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            Action::Pause => each(self, state, nodes, "continue", |_, state, i| {
                signal(state, i, libc::SIGCONT)
            }),
            // Space freed; a node that stopped on the full disk is started again.
            Action::DiskFull => each(self, state, nodes, "free the disk of", |this, state, i| {
                crate::disk::free(&data_dir(state, i))?;
                let running = state.nodes[i].pid.is_some_and(process::is_node_process);
                if !running {
                    process::start_node(&this.base, state, i).map_err(|e| e.to_string())?;
                }
                Ok(())
            }),
            Action::DiskSlow(_) => {
                each(self, state, nodes, "speed up the disk of", |_, state, i| {
                    crate::disk::set_fsync_delay(&data_dir(state, i), 0)
                })
            }
            Action::PowerLoss => each(self, state, nodes, "start", |this, state, i| {
                process::start_node(&this.base, state, i)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            _ => Ok(()),
        }
    }

    fn memory(&self, state: &DevnetState) -> Vec<Option<u64>> {
        state
            .nodes
            .iter()
            .map(|node| {
                node.pid
                    .filter(|pid| process::is_node_process(*pid))
                    .and_then(process::rss_bytes)
            })
            .collect()
    }

    fn running(&self, state: &DevnetState) -> Vec<String> {
        state
            .nodes
            .iter()
            .map(|node| match node.pid {
                Some(pid) if process::is_node_process(pid) => pid.to_string(),
                Some(_) => "stopped".to_string(),
                None => "-".to_string(),
            })
            .collect()
    }

    /// The node's log file: its last lines, then (with `follow`) what is appended, read every
    /// 500 ms until the user interrupts.
    fn logs(
        &self,
        state: &DevnetState,
        index: usize,
        options: LogOptions,
        out: &mut dyn std::io::Write,
    ) -> Result<(), BackendError> {
        let path = &state.nodes[index].log;
        let fail = |reason: String| logs_error(state, index, reason);
        let mut offset = 0usize;
        loop {
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
            let lines: Vec<&str> = text[offset.min(text.len())..].lines().collect();
            let skip = if offset == 0 && options.tail > 0 {
                lines.len().saturating_sub(options.tail)
            } else {
                0
            };
            for line in &lines[skip..] {
                writeln!(out, "{line}").map_err(|e| fail(e.to_string()))?;
            }
            offset = text.len();
            if !options.follow {
                return Ok(());
            }
            out.flush().map_err(|e| fail(e.to_string()))?;
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
