//! `compose/`: the checked-in 4-node docker-compose devnet is what `devnet compose` renders
//! today, and `docker-compose -f compose/docker-compose.yml up` starts a devnet whose nodes
//! commit the same blocks; `docker-compose down` leaves nothing behind.
//!
//! The second test needs a Docker daemon and `docker-compose`. On a laptop without them it
//! skips with a loud message; with `CI=true` a missing one is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use blyan_devnet::{daemon, leftovers, repo_root, runtime};
use blyan_harness::docker;
use blyan_harness::manifest::Manifest;
use blyan_harness::process;
use blyan_harness::render::compose::{self, ComposeOptions};

/// Every file under `dir`, relative, sorted; the nodes' runtime directories left out.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "data" && name != "checkpoints" {
                    walk(root, &path, out);
                }
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// What `devnet compose` (no flags) renders, in a scratch directory.
fn render_default(dir: &Path) -> compose::Rendered {
    compose::write(
        dir,
        &Manifest::default_named("default"),
        &ComposeOptions::default(),
    )
    .unwrap()
}

#[test]
fn checked_in_compose_is_what_devnet_compose_renders() {
    let scratch = tempfile::tempdir().unwrap();
    render_default(scratch.path());
    let checked_in = repo_root().join("compose");
    let mut expected = files(scratch.path());
    expected.push(PathBuf::from("README.md"));
    expected.sort();
    assert_eq!(
        files(&checked_in),
        expected,
        "compose/ holds other files than `devnet compose` writes"
    );
    for file in files(scratch.path()) {
        assert_eq!(
            std::fs::read(checked_in.join(&file)).unwrap(),
            std::fs::read(scratch.path().join(&file)).unwrap(),
            "compose/{} is stale: run `devnet compose` in the repository root and commit",
            file.display()
        );
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for file in files(from) {
        let target = to.join(&file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&file), &target).unwrap();
    }
}

fn tool_or_skip(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true but `{program} {}` fails: the compose test must run in CI",
                args.join(" ")
            );
        }
        blyan_devnet::skipped(&format!("`{program} {}` fails", args.join(" ")));
    }
    ok
}

fn compose_cmd(file: &Path, project: &str, args: &[&str]) -> std::process::Output {
    Command::new("docker-compose")
        .arg("-f")
        .arg(file)
        .args(["-p", project])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn checked_in_compose_starts_and_commits_then_leaves_nothing() {
    if !tool_or_skip("docker", &["info"]) || !tool_or_skip("docker-compose", &["version"]) {
        return;
    }
    let rt = runtime();
    let Some(docker) = daemon(&rt) else { return };
    // The image the compose file names (blyan-node:dev), from this build's node binary.
    let node_bin = process::default_node_bin();
    assert!(node_bin.is_file(), "{} missing", node_bin.display());
    rt.block_on(docker::build_image(&docker, &node_bin, false))
        .unwrap();

    // Run a copy of compose/, so the nodes' data stays out of the repository.
    let run = tempfile::tempdir().unwrap();
    copy_tree(&repo_root().join("compose"), run.path());
    let file = run.path().join("docker-compose.yml");
    let project = format!("blyancomposetest{}", std::process::id());
    let started = Instant::now();
    let up = compose_cmd(&file, &project, &["up", "-d"]);
    let scratch = tempfile::tempdir().unwrap();
    let state = render_default(scratch.path()).state;
    let result = std::panic::catch_unwind(|| {
        assert!(
            up.status.success(),
            "docker-compose up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        let all: Vec<usize> = (0..state.nodes.len()).collect();
        process::wait_for_height(&state, &all, 5, Duration::from_secs(120), |_| {})
            .unwrap_or_else(|error| panic!("compose devnet: {error}"));
        eprintln!(
            "compose devnet: 4 nodes at height 5 {:.1} s after `docker-compose up -d`",
            started.elapsed().as_secs_f64()
        );
        process::check_agreement(&state, &all, 5).unwrap();
    });
    let down = compose_cmd(&file, &project, &["down", "-v", "--timeout", "5"]);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(
        down.status.success(),
        "docker-compose down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let (containers, networks, _) = rt.block_on(leftovers(&docker, "compose-default"));
    assert_eq!(
        (containers, networks),
        (0, 0),
        "left behind by docker-compose down"
    );
}
