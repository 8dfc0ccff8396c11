//! The harness library's structure, checked from its source: data flows one way (no module
//! imports a module that imports it back), and only the backends branch on a backend's kind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library's modules (the `devnet` binary's `main.rs` and `cli/` left out), by path
/// (`docker::nat`), with their source without comments and test modules.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if parts.first().is_some_and(|p| p == "main" || p == "cli") || parts == ["lib"] {
            continue;
        }
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .map(|line| line.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        out.insert(parts.join("::"), code);
    }
    out
}

/// The module paths `code` (of module `me`) names: `crate::a::b`, `super::c`, and the items of
/// `use crate::{a, b::c}` groups.
fn named_paths(me: &str, is_dir: bool, code: &str) -> Vec<Vec<String>> {
    let flat = code.replace(['\n', ' '], "");
    let mut paths = Vec::new();
    let words: Vec<&str> = flat
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{' || c == ','))
        .collect();
    for word in words {
        for root in ["crate::", "super::"] {
            let mut rest = word;
            while let Some(at) = rest.find(root) {
                let tail = &rest[at..];
                let (head, group) = match tail.split_once("::{") {
                    Some((head, group)) => (head, Some(group)),
                    None => (tail.split(['{', ',']).next().unwrap(), None),
                };
                let mut base: Vec<String> = if root == "crate::" {
                    Vec::new()
                } else {
                    let mut parent: Vec<String> = me.split("::").map(str::to_string).collect();
                    if !is_dir {
                        parent.pop();
                    }
                    parent
                };
                base.extend(head.split("::").skip(1).map(str::to_string));
                paths.push(base.clone());
                for item in group.unwrap_or("").split(',') {
                    let item = item.trim_matches('}');
                    if !item.is_empty() && item != "self" {
                        let mut path = base.clone();
                        path.extend(item.split("::").map(str::to_string));
                        paths.push(path);
                    }
                }
                rest = &tail[root.len()..];
            }
        }
    }
    paths
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let mut edges = BTreeMap::new();
    for (me, code) in &modules {
        let is_dir = src.join(me.replace("::", "/")).join("mod.rs").is_file();
        let mut targets = BTreeSet::new();
        for path in named_paths(me, is_dir, code) {
            // The longest prefix of the path that is a module.
            let found = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = found {
                let inside = me.starts_with(&format!("{target}::"));
                if &target != me && !inside {
                    targets.insert(target);
                }
            }
        }
        edges.insert(me.clone(), targets);
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in &edges[&at] {
            if next == start {
                return Some(path.iter().cloned().chain([start.to_string()]).collect());
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(
        edges.len() > 30,
        "the walk found the modules: {:?}",
        edges.keys()
    );
    // The walk sees real imports: the run engine uses the backends and the recorder.
    assert!(edges["run"].contains("backend") && edges["run"].contains("recorder"));
    let cycles: Vec<String> = edges
        .keys()
        .filter_map(|module| cycle_from(module, &edges))
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn only_the_backends_branch_on_a_backend_kind() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut branches = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(src.join("backend"))) {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            let compares = [
                "== BackendKind::",
                "!= BackendKind::",
                "backend == \"",
                "backend != \"",
            ]
            .iter()
            .any(|pattern| code.contains(pattern));
            let arm = code.trim_start().starts_with("BackendKind::") && code.contains("=>");
            if compares || arm {
                branches.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(branches.is_empty(), "{}", branches.join("\n"));
}
