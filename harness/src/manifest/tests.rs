use super::*;

fn error(text: &str) -> String {
    Manifest::parse(text, "m.toml").unwrap_err().to_string()
}

const BASE: &str = "name = \"t\"\nchain_id = \"c\"\n";

#[test]
fn the_example_and_the_default_are_valid() {
    let example = Manifest::parse(EXAMPLE, "example").unwrap();
    assert_eq!(example.resolve().len(), 4);
    let default = Manifest::default_named("default");
    default.validate("built-in").unwrap();
    let nodes = default.resolve();
    assert_eq!(nodes.len(), 4);
    assert!(nodes
        .iter()
        .all(|node| node.role == Role::Validator && node.stake == 10));
}

#[test]
fn explicit_nodes_resolve_in_order_with_roles_and_stake() {
    let manifest = Manifest::parse(
        &format!(
            "{BASE}[[nodes]]\nname = \"a\"\nstake = 30\nzone = \"eu\"\n[[nodes]]\nname = \"b\"\nrole = \"full\"\n"
        ),
        "m",
    )
    .unwrap();
    let nodes = manifest.resolve();
    assert_eq!(nodes[0].stake, 30);
    assert_eq!(nodes[0].zone, "eu");
    assert_eq!(nodes[1].role, Role::Full);
    assert_eq!(nodes[1].stake, 0);
}

/// The field (or position) each case of `bad_manifests_name_the_field` must name.
const FIELDS: &[(&str, &str)] = &[
    ("unknown field", "`surprise`"),
    ("negative stake", "nodes[0].stake:"),
    ("zero stake", "nodes[3].stake:"),
    ("zero validators", "validators:"),
    ("only full nodes", "nodes:"),
    ("duplicate names", "nodes[1].name:"),
    ("too many nodes", "validators:"),
    ("counts and nodes", "nodes:"),
    ("bad role", "`king`"),
    ("bad fault kind", "unknown variant `meteor`"),
    ("field of another kind", "unknown field `latency_ms`"),
    ("fault on unknown node", "faults[0].nodes:"),
    ("link fault without proxy", "faults[0].kind:"),
    ("latency without latency_ms", "faults[0].latency_ms:"),
    ("jitter above latency", "faults[0].jitter_ms:"),
    ("bad partition shape", "faults[0].shape:"),
    ("halves without proxy", "faults[0].shape:"),
    ("partition forever", "faults[0].duration_s:"),
    ("random bad kind", "faults[0].kinds:"),
    ("random link kind without proxy", "faults[0].kinds:"),
    ("twin of nobody", "nodes[1].twin_of:"),
    (
        "heights trigger without heights",
        "nodes[0].byzantine.heights:",
    ),
    ("latency zone without nodes", "network.latency[0].from:"),
    ("bad byzantine", "nodes[0].byzantine.behaviour:"),
    ("mutate-block without field", "nodes[0].byzantine.field:"),
    ("field on another behaviour", "nodes[0].byzantine.field:"),
    ("oneway without to", "faults[0].to:"),
    ("oneway node on both sides", "faults[0].to:"),
    ("oneway without proxy", "faults[0].kind:"),
    ("from on halves", "faults[0].from:"),
    ("messages probability", "faults[0].drop:"),
    ("messages that do nothing", "faults[0].kind:"),
    ("messages from itself", "faults[0].peers:"),
    ("clock beyond a day", "faults[0].skew_ms:"),
    ("upgrade without binary", "faults[0].binary:"),
    ("upgrade on swarm", "faults[0].kind:"),
    ("disk slow without delay", "faults[0].fsync_ms:"),
    ("disk on swarm", "faults[0].kind:"),
    ("join on swarm", "faults[0].kind:"),
    ("disk power loss with a size", "faults[0].size_mb:"),
    ("disk full and power loss on one node", "faults[1].nodes:"),
    (
        "probability without value",
        "nodes[0].byzantine.probability:",
    ),
    ("zero epoch", "consensus.epoch_length:"),
    ("memory", "resources.memory_mb:"),
    ("bad name", "name:"),
    ("missing name", "`name`"),
    ("not toml", "(line 1, column 8)"),
];

#[test]
fn bad_manifests_name_the_field() {
    let cases = [
        ("unknown field", format!("{BASE}surprise = 1\n")),
        ("negative stake", format!("{BASE}[[nodes]]\nname = \"a\"\nstake = -5\n")),
        ("zero stake", format!("{BASE}[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n[[nodes]]\nname = \"c\"\n[[nodes]]\nname = \"d\"\nstake = 0\n")),
        ("zero validators", format!("{BASE}validators = 0\n")),
        ("only full nodes", format!("{BASE}[[nodes]]\nname = \"a\"\nrole = \"full\"\n")),
        ("duplicate names", format!("{BASE}[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"a\"\n")),
        ("too many nodes", format!("{BASE}validators = 150\nfull_nodes = 60\n")),
        ("counts and nodes", format!("{BASE}validators = 2\n[[nodes]]\nname = \"a\"\n")),
        ("bad role", format!("{BASE}[[nodes]]\nname = \"a\"\nrole = \"king\"\n")),
        ("bad fault kind", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"meteor\"\n")),
        ("field of another kind", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"kill\"\nnodes = [\"node1\"]\nlatency_ms = 100\nduration_s = 5\n")),
        ("fault on unknown node", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"kill\"\nnodes = [\"node9\"]\n")),
        ("link fault without proxy", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"latency\"\nlink = [\"node0\", \"node1\"]\nlatency_ms = 100\nduration_s = 5\n")),
        ("latency without latency_ms", format!("{BASE}[network]\nproxy = true\n[[faults]]\nat_s = 1\nkind = \"latency\"\nlink = [\"node0\", \"node1\"]\nduration_s = 5\n")),
        ("jitter above latency", format!("{BASE}[network]\nproxy = true\n[[faults]]\nat_s = 1\nkind = \"latency\"\nnodes = [\"node0\"]\nlatency_ms = 10\njitter_ms = 20\nduration_s = 5\n")),
        ("bad partition shape", format!("{BASE}[network]\nproxy = true\n[[faults]]\nat_s = 1\nkind = \"partition\"\nshape = \"triangle\"\nduration_s = 5\n")),
        ("halves without proxy", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"partition\"\nshape = \"halves\"\nduration_s = 5\n")),
        ("partition forever", format!("{BASE}[network]\nproxy = true\n[[faults]]\nat_s = 1\nkind = \"partition\"\nshape = \"halves\"\n")),
        ("random bad kind", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"random\"\nduration_s = 30\nkinds = [\"flood\"]\n")),
        ("random link kind without proxy", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"random\"\nduration_s = 30\nkinds = [\"cut\"]\n")),
        ("twin of nobody", format!("{BASE}[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\ntwin_of = \"z\"\n")),
        ("heights trigger without heights", format!("{BASE}[[nodes]]\nname = \"a\"\nbyzantine = {{ behaviour = \"withhold-votes\", trigger = \"heights\" }}\n")),
        ("latency zone without nodes", format!("{BASE}[[network.latency]]\nfrom = \"eu\"\nto = \"default\"\nlatency_ms = 5\n")),
        ("bad byzantine", format!("{BASE}[[nodes]]\nname = \"a\"\nbyzantine = {{ behaviour = \"nap\" }}\n")),
        ("mutate-block without field", format!("{BASE}[[nodes]]\nname = \"a\"\nbyzantine = {{ behaviour = \"mutate-block\" }}\n")),
        ("field on another behaviour", format!("{BASE}[[nodes]]\nname = \"a\"\nbyzantine = {{ behaviour = \"invalid-blocks\", field = \"time\" }}\n")),
        ("oneway without to", format!("{BASE}[network]\nproxy = true\n[[faults]]\nat_s = 1\nkind = \"partition\"\nshape = \"oneway\"\nfrom = [\"node0\"]\nduration_s = 5\n")),
        ("oneway node on both sides", format!("{BASE}[network]\nproxy = true\n[[faults]]\nat_s = 1\nkind = \"partition\"\nshape = \"oneway\"\nfrom = [\"node0\", \"node1\"]\nto = [\"node1\"]\nduration_s = 5\n")),
        ("oneway without proxy", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"partition\"\nshape = \"oneway\"\nfrom = [\"node0\"]\nto = [\"node1\"]\nduration_s = 5\n")),
        ("from on halves", format!("{BASE}[network]\nproxy = true\n[[faults]]\nat_s = 1\nkind = \"partition\"\nshape = \"halves\"\nfrom = [\"node0\"]\nduration_s = 5\n")),
        ("messages probability", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"messages\"\nnodes = [\"node0\"]\ndrop = 1.5\nduration_s = 5\n")),
        ("messages that do nothing", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"messages\"\nnodes = [\"node0\"]\ntypes = [\"vote\"]\nduration_s = 5\n")),
        ("messages from itself", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"messages\"\nnodes = [\"node0\"]\npeers = [\"node1\", \"node0\"]\ndrop = 1.0\nduration_s = 5\n")),
        ("clock beyond a day", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"clock\"\nnodes = [\"node0\"]\nskew_ms = 90000000\nduration_s = 5\n")),
        ("upgrade without binary", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"upgrade\"\nnodes = [\"node0\"]\n")),
        ("upgrade on swarm", format!("{BASE}backend = \"swarm\"\n[[faults]]\nat_s = 1\nkind = \"upgrade\"\nnodes = [\"node0\"]\nbinary = \"/bin/true\"\n")),
        ("disk slow without delay", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"disk\"\nmode = \"slow\"\nnodes = [\"node0\"]\nduration_s = 5\n")),
        ("disk on swarm", format!("{BASE}backend = \"swarm\"\n[[faults]]\nat_s = 1\nkind = \"disk\"\nmode = \"power_loss\"\nnodes = [\"node0\"]\nduration_s = 5\n")),
        ("join on swarm", format!("{BASE}backend = \"swarm\"\nfull_nodes = 1\n[[faults]]\nat_s = 60\nkind = \"join\"\nnodes = [\"node4\"]\n")),
        ("disk power loss with a size", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"disk\"\nmode = \"power_loss\"\nnodes = [\"node0\"]\nsize_mb = 64\nduration_s = 5\n")),
        ("disk full and power loss on one node", format!("{BASE}[[faults]]\nat_s = 1\nkind = \"disk\"\nmode = \"full\"\nnodes = [\"node0\"]\nduration_s = 5\n[[faults]]\nat_s = 9\nkind = \"disk\"\nmode = \"power_loss\"\nnodes = [\"node1\", \"node0\"]\nduration_s = 5\n")),
        ("probability without value", format!("{BASE}[[nodes]]\nname = \"a\"\nbyzantine = {{ behaviour = \"spam\", trigger = \"probability\" }}\n")),
        ("zero epoch", format!("{BASE}[consensus]\ntimeout_propose_ms = 1\ntimeout_prevote_ms = 1\ntimeout_precommit_ms = 1\ntimeout_commit_ms = 0\nepoch_length = 0\n")),
        ("memory", format!("{BASE}[resources]\nmemory_mb = 1\n")),
        ("bad name", "name = \"a b\"\nchain_id = \"c\"\n".to_string()),
        ("missing name", "chain_id = \"a\"\n".to_string()),
        ("not toml", "name = \n".to_string()),
    ];
    let report: Vec<String> = cases
        .iter()
        .map(|(case, text)| {
            let message = error(text);
            // Each message names the field (or the line) at fault, not just any error.
            let field = FIELDS
                .iter()
                .find(|(name, _)| name == case)
                .map(|(_, field)| *field)
                .unwrap_or_else(|| panic!("{case}: no expected field"));
            assert!(
                message.starts_with("m.toml: ") && message.contains(field),
                "{case}: {message:?} does not name {field:?}"
            );
            format!("{case}: {message}")
        })
        .collect();
    insta::assert_snapshot!(report.join("\n"));
}

#[test]
fn a_partial_section_keeps_the_defaults_of_the_fields_it_leaves_out() {
    let manifest = Manifest::parse(
        &format!("{BASE}[consensus]\ntimeout_commit_ms = 1000\n[resources]\n"),
        "m",
    )
    .unwrap();
    assert_eq!(manifest.consensus.timeout_commit_ms, 1000);
    assert_eq!(
        manifest.consensus.timeout_propose_ms,
        Consensus::default().timeout_propose_ms
    );
    assert_eq!(manifest.resources, Resources::default());
    // Unknown fields are still refused.
    assert!(
        error(&format!("{BASE}[consensus]\ntimeout_comit_ms = 1\n")).contains("timeout_comit_ms")
    );
}

#[test]
fn a_ramp_must_ascend_with_positive_rates() {
    let ok = Manifest::parse(&format!("{BASE}[load]\nramp = [100, 200]\n"), "m").unwrap();
    assert_eq!(ok.load.ramp, vec![100, 200]);
    assert_eq!(
        error(&format!("{BASE}[load]\nramp = [200, 100]\n")),
        "m.toml: load.ramp[1]: rates must ascend"
    );
    assert_eq!(
        error(&format!("{BASE}[load]\nramp = [0]\n")),
        "m.toml: load.ramp[0]: must be between 1 and 1000000"
    );
    // NAT topologies: names checked, relays public, one home per node, no link proxy.
    let topology = "validators = 4\n[network.topology]\nrelays = [\"node0\"]\n";
    assert_eq!(
        error(&format!(
            "{BASE}{topology}[[network.topology.homes]]\nnodes = [\"node9\"]\n"
        )),
        "m.toml: network.topology.homes[0].nodes[0]: no node named \"node9\""
    );
    assert_eq!(
        error(&format!(
            "{BASE}{topology}[[network.topology.homes]]\nnodes = [\"node0\"]\n"
        )),
        "m.toml: network.topology.homes[0].nodes[0]: \"node0\" is a relay; relays are public"
    );
    assert_eq!(
        error(&format!(
            "{BASE}{topology}[[network.topology.homes]]\nnodes = [\"node1\"]\n[[network.topology.homes]]\nnodes = [\"node1\"]\n"
        )),
        "m.toml: network.topology.homes[1].nodes[0]: \"node1\" is in two homes"
    );
    assert_eq!(
        error(&format!(
            "{BASE}{topology}[[network.topology.homes]]\nnodes = [\"node1\"]\nmapping = \"symmetric\"\n"
        ))
        .split(':')
        .next(),
        Some("m.toml")
    );
    assert!(error(&format!(
        "{BASE}validators = 4\n[network]\nproxy = true\n[network.topology]\nrelays = [\"node0\"]\n"
    ))
    .contains("network.topology: NAT topologies route links through routers"));
    // The repository's suites and scenarios are valid manifests.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = Vec::new();
    for dir in ["bench/suites", "scenarios"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let manifest = Manifest::load(&path).unwrap_or_else(|error| panic!("{error}"));
            names.push(manifest.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "ab-4",
            "byzantine-beyond-f",
            "byzantine-mix",
            "chaos-links",
            "chaos-more",
            "clock",
            "disk-full",
            "disk-power-loss",
            "disk-slow",
            "join",
            "latency-10",
            "messages",
            "mutate-block",
            "nat",
            "oneway",
            "partition-equivocate",
            "random-nemesis",
            "startup-100",
            "startup-50",
            "throughput-4",
            "twins",
            "upgrade",
            "validators-100"
        ]
    );
}

#[test]
fn inference_section_is_checked_and_drives_the_generator() {
    let parsed = Manifest::parse(
        &format!("{BASE}[inference]\non = \"node2\"\nseed = 9\nlayers = 2\nexperts = 3\n"),
        "m.toml",
    )
    .unwrap();
    let spec = parsed.inference.unwrap();
    assert_eq!(spec.files(), 7);
    assert_eq!(spec.node(), "node2");
    let args = spec.generate_args().join(" ");
    assert!(
        args.contains("--seed 9") && args.contains("--layers 2") && args.contains("--experts 3"),
        "{args}"
    );
    assert!(
        args.contains("--dim 256") && args.contains("--model moe"),
        "{args}"
    );
    for (section, needle) in [
        ("on = \"node9\"", "inference.on: no node named \"node9\""),
        (
            "top_k = 9",
            "inference.top_k: top_k 9 is not between 1 and 8",
        ),
        ("dim = -1", "inference.dim: -1 must be > 0"),
        ("tile_bytes = 0", "inference.tile_bytes"),
        ("model = \"a/b\"", "inference.model"),
        ("colour = 1", "unknown field `colour`"),
    ] {
        let text = error(&format!("{BASE}[inference]\n{section}\n"));
        assert!(text.contains(needle), "{section}: {text}");
    }
}

#[test]
fn every_backend_parses_and_an_unknown_one_is_named() {
    for (text, kind) in [
        ("auto", BackendKind::Auto),
        ("docker", BackendKind::Docker),
        ("process", BackendKind::Process),
        ("swarm", BackendKind::Swarm),
    ] {
        let manifest = Manifest::parse(&format!("{BASE}backend = \"{text}\"\n"), "m.toml").unwrap();
        assert_eq!(manifest.backend, kind);
    }
    let error = error(&format!("{BASE}backend = \"k8s\"\n"));
    // The error points at the line and lists what is accepted.
    assert!(
        error.contains("unknown variant `k8s`")
            && error.contains("`swarm`")
            && error.contains("line 3"),
        "{error}"
    );
}
