//! `devnet ab` end to end on the process backend: two builds (here one binary twice) run in
//! interleaved pairs, a fresh devnet each; ab.json holds both sides' runs pair by pair and a
//! verdict per figure.

use std::process::Command;

#[test]
fn ab_runs_pairs_in_alternating_order_and_judges_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    // 4 s, not 2: a 2 s step commits about 89-94 % of its rate (the last block's latency),
    // around the 90 % a step must reach to hold, so saturation_tps was 0 on one side now and
    // then, and that figure had no ratio (CI failed twice on it).
    let suite = dir.path().join("tiny.toml");
    std::fs::write(
        &suite,
        "name = \"ab-tiny\"\nvalidators = 4\nduration_s = 4\n[load]\nrate = 100\naccounts = 16\n",
    )
    .unwrap();
    let node = blyan_harness::process::default_node_bin();
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_devnet"))
        .arg("ab")
        .arg("--base-bin")
        .arg(&node)
        .arg("--head-bin")
        .arg(&node)
        .arg("--suite")
        .arg(&suite)
        .args(["--pairs", "2", "--backend", "process"])
        .arg("--out")
        .arg(&out)
        .arg("--devnets")
        .arg(dir.path().join("devnets"))
        .env_remove("BLYAN_NODE_BIN")
        .output()
        .expect("devnet runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    let ab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ab.json")).unwrap()).unwrap();
    assert_eq!(ab["base"]["runs"].as_array().unwrap().len(), 2, "{ab}");
    assert_eq!(ab["head"]["runs"].as_array().unwrap().len(), 2, "{ab}");
    // A B, then B A.
    assert_eq!(ab["base_first"], serde_json::json!([true, false]));
    let order: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("pair "))
        .filter_map(|line| line.split(": up").next())
        .collect();
    assert_eq!(
        order,
        ["1/2 base", "1/2 head", "2/2 head", "2/2 base"],
        "{text}"
    );
    // Every figure judged; two pairs are too few for any verdict but inconclusive.
    let comparisons = ab["comparisons"].as_array().unwrap();
    assert!(comparisons.len() >= 7, "{ab}");
    for comparison in comparisons {
        assert_eq!(comparison["verdict"], "inconclusive", "{comparison}");
        let ratio = comparison["ratio"].as_f64().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0, "{comparison}");
    }
    let committed = &ab["head"]["runs"][0]["steps"][0]["report"]["committed"];
    assert!(committed.as_u64().unwrap() > 0, "{ab}");
}
