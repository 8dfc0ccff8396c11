//! The bootstrap infrastructure (harness/deploy/terraform/bootstrap) cannot be applied here (no
//! cloud account, no network beyond this machine); this parses every file with an HCL parser
//! and checks what a wrong edit would break: five bootstrap nodes in five distinct regions on
//! at least four continents, each module's region matching the provider it is given, the ports
//! and image the harness and node use, the firewall openings, and the seeder's DNS records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hcl::{Block, Body, Expression};

fn module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/deploy/terraform/bootstrap")
}

/// Every `.tf` file of a directory, parsed, by file name.
fn parse_dir(dir: &Path) -> BTreeMap<String, Body> {
    let mut bodies = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tf") {
            let text = std::fs::read_to_string(&path).unwrap();
            let body = hcl::parse(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            bodies.insert(
                path.file_name().unwrap().to_string_lossy().into_owned(),
                body,
            );
        }
    }
    assert!(!bodies.is_empty(), "no .tf files in {}", dir.display());
    bodies
}

fn blocks<'a>(bodies: &'a BTreeMap<String, Body>, kind: &'a str) -> Vec<&'a Block> {
    bodies
        .values()
        .flat_map(|b| b.blocks())
        .filter(|b| b.identifier() == kind)
        .collect()
}

fn attr<'a>(block: &'a Block, key: &str) -> Option<&'a Expression> {
    block
        .body()
        .attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr())
}

fn string(expr: Option<&Expression>) -> Option<String> {
    match expr? {
        Expression::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn label(block: &Block, index: usize) -> String {
    block.labels()[index].as_str().to_string()
}

fn variable_default(bodies: &BTreeMap<String, Body>, name: &str) -> Expression {
    let block = blocks(bodies, "variable")
        .into_iter()
        .find(|b| label(b, 0) == name)
        .unwrap_or_else(|| panic!("no variable {name:?}"));
    attr(block, "default")
        .unwrap_or_else(|| panic!("variable {name:?} has no default"))
        .clone()
}

#[test]
fn five_bootstrap_nodes_in_distinct_regions_each_on_its_own_provider() {
    let root = parse_dir(&module_dir());
    // provider alias -> region
    let providers: BTreeMap<String, String> = blocks(&root, "provider")
        .into_iter()
        .filter(|b| label(b, 0) == "aws")
        .map(|b| {
            (
                string(attr(b, "alias")).expect("every aws provider has an alias"),
                string(attr(b, "region")).expect("every aws provider names its region"),
            )
        })
        .collect();
    let modules: Vec<&Block> = blocks(&root, "module")
        .into_iter()
        .filter(|b| string(attr(b, "source")).as_deref() == Some("./node"))
        .collect();
    assert_eq!(modules.len(), 5, "five bootstrap node modules");
    let mut regions = BTreeSet::new();
    let mut names = BTreeSet::new();
    for module in &modules {
        let region = string(attr(module, "region")).expect("module region");
        let Some(Expression::Object(given)) = attr(module, "providers") else {
            panic!("module {} passes no providers", label(module, 0));
        };
        let alias = given
            .values()
            .next()
            .expect("one provider")
            .to_string()
            .trim()
            .strip_prefix("aws.")
            .expect("an aws.<alias> provider")
            .to_string();
        assert_eq!(
            providers.get(&alias),
            Some(&region),
            "module {} says region {region} but runs on provider aws.{alias}",
            label(module, 0)
        );
        regions.insert(region);
        names.insert(string(attr(module, "name")).expect("module name"));
    }
    assert_eq!(regions.len(), 5, "five distinct regions: {regions:?}");
    assert_eq!(names.len(), 5, "five distinct names: {names:?}");
    let continents: BTreeSet<&str> = regions
        .iter()
        .map(|r| r.split('-').next().unwrap())
        .collect();
    assert!(
        continents.len() >= 4,
        "spread over at least four continents: {continents:?}"
    );
    // Every module's key comes from bootstrap_keys under its own name.
    for module in &modules {
        let name = string(attr(module, "name")).unwrap();
        let peer = attr(module, "peer_id").unwrap().to_string();
        assert!(
            peer.contains(&format!("\"{name}\"")),
            "module {name} takes another node's peer id: {peer}"
        );
    }
}

#[test]
fn ports_and_image_are_the_ones_the_node_and_harness_use() {
    let root = parse_dir(&module_dir());
    let number = |name: &str| match variable_default(&root, name) {
        Expression::Number(n) => n.as_u64().unwrap(),
        other => panic!("{name} default is not a number: {other:?}"),
    };
    assert_eq!(
        number("p2p_port"),
        u64::from(blyan_harness::docker::P2P_PORT)
    );
    assert_eq!(
        number("api_port"),
        u64::from(blyan_harness::docker::API_PORT)
    );
    let Expression::String(image) = variable_default(&root, "node_image") else {
        panic!("node_image default is not a string");
    };
    assert_eq!(
        image,
        format!(
            "{}:{}",
            blyan_harness::docker::IMAGE,
            env!("CARGO_PKG_VERSION")
        ),
        "the image the harness builds, at this version"
    );
}

#[test]
fn the_firewall_opens_p2p_and_dns_and_keeps_the_api_closed_by_default() {
    let node = parse_dir(&module_dir().join("node"));
    let group = blocks(&node, "resource")
        .into_iter()
        .find(|b| label(b, 0) == "aws_security_group")
        .expect("a security group");
    let open: BTreeSet<(String, String)> = group
        .body()
        .blocks()
        .filter(|b| b.identifier() == "ingress")
        .map(|b| {
            (
                string(attr(b, "protocol")).unwrap(),
                attr(b, "from_port").unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("tcp", "var.p2p_port"),
        ("udp", "var.p2p_port"),
        ("udp", "53"),
        ("tcp", "53"),
    ] {
        assert!(
            open.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} is not opened: {open:?}"
        );
    }
    // The API is opened only through a dynamic block conditional on api_cidrs.
    assert!(
        !open.iter().any(|(_, port)| port == "var.api_port"),
        "the API must not be open to the world"
    );
    let root = parse_dir(&module_dir());
    match variable_default(&root, "api_cidrs") {
        Expression::Array(a) => assert!(a.is_empty(), "api_cidrs defaults to nobody"),
        other => panic!("api_cidrs default: {other:?}"),
    }
}

#[test]
fn the_seeder_gets_its_dns_delegation_and_runs_on_every_bootstrap_host() {
    let root = parse_dir(&module_dir());
    let records: BTreeMap<String, String> = blocks(&root, "resource")
        .into_iter()
        .filter(|b| label(b, 0) == "aws_route53_record")
        .map(|b| (label(b, 1), string(attr(b, "type")).unwrap()))
        .collect();
    assert_eq!(records.get("seed_ns").map(String::as_str), Some("NS"));
    assert_eq!(records.get("boot").map(String::as_str), Some("A"));
    assert_eq!(records.get("boot_dnsaddr").map(String::as_str), Some("TXT"));
    let cloud_init =
        std::fs::read_to_string(module_dir().join("node/cloud-init.yaml.tftpl")).unwrap();
    for want in [
        "seeder",
        "--domain",
        "0.0.0.0:53",
        "BLYAN_P2P_RELAY_SERVER",
        "start",
        "node_key.json",
    ] {
        assert!(cloud_init.contains(want), "cloud-init lacks {want:?}");
    }
}
