//! The README's promise: it opens with the command that starts the main job and the command
//! that runs the tests, and CI runs exactly that test command.

use blyan_devnet::repo_root;

fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a sh code block");
    block
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn readme_opens_with_the_start_and_test_commands() {
    let commands = readme_commands();
    assert_eq!(commands.len(), 2, "exactly two commands: {commands:?}");
    assert!(commands[0].contains("devnet up"), "{}", commands[0]);
    assert!(commands[1].starts_with("cargo test"), "{}", commands[1]);
}

/// `.ci/summary` counts every binary's results, names failures, and counts and names the
/// tests that skipped for want of Docker (libtest itself counts them passed).
#[test]
fn ci_summary_counts_passes_failures_and_visible_skips() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("test.log");
    std::fs::write(
        &log,
        "test a ... ok\ntest broken ... FAILED\n\
         test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n\
         SKIPPED docker_up: no Docker daemon answers (connection refused)\n\
         test docker_up ... ok\n\
         test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n",
    )
    .unwrap();
    let output = std::process::Command::new("bash")
        .arg(repo_root().join(".ci/summary"))
        .arg(&log)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"failed: broken"), "{text}");
    assert!(lines.contains(&"skipped: docker_up"), "{text}");
    assert_eq!(
        lines.last(),
        Some(&"4 passed, 1 failed, 2 skipped"),
        "{text}"
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let test_command = readme_commands().remove(1);
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines()
            .any(|line| line.trim_start().starts_with(&test_command)),
        ".ci/run does not run `{test_command}`"
    );
}

#[test]
fn workspace_declares_every_shared_dependency_once() {
    let root = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let root: toml_lite::Document = toml_lite::parse(&root);
    for member in ["node", "harness", "chaos", "loadgen"] {
        let manifest =
            std::fs::read_to_string(repo_root().join(member).join("Cargo.toml")).unwrap();
        for dependency in toml_lite::dependency_lines(&manifest) {
            assert!(
                dependency.ends_with(".workspace = true")
                    || dependency.contains("workspace = true")
                    || !root.declares(&dependency),
                "{member}/Cargo.toml pins {dependency:?} itself; use [workspace.dependencies]"
            );
        }
    }
}

/// Just enough TOML reading for the check above, without a dependency.
mod toml_lite {
    pub struct Document {
        names: Vec<String>,
    }

    impl Document {
        pub fn declares(&self, line: &str) -> bool {
            let name = line.split(['=', '.']).next().unwrap_or("").trim();
            self.names.iter().any(|known| known == name)
        }
    }

    pub fn parse(text: &str) -> Document {
        let section = text
            .split("[workspace.dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .unwrap_or("");
        let names = section
            .lines()
            .filter_map(|line| line.split('=').next())
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty() && !name.starts_with('#'))
            .collect();
        Document { names }
    }

    pub fn dependency_lines(text: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let mut inside = false;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                inside = trimmed.ends_with("dependencies]");
                continue;
            }
            if inside && !trimmed.is_empty() && !trimmed.starts_with('#') {
                lines.push(trimmed.to_string());
            }
        }
        lines
    }
}
