# Five bootstrap nodes, one per region, each running the node image as a full node with the
# circuit relay server on and the DNS seeder beside it; DNS records for the nodes and the
# delegation of seed.<domain> to the seeders (see docs/NETWORKING.md, "Bootstrap infrastructure").

module "boot_us_east" {
  source    = "./node"
  providers = { aws = aws.us_east }
  name      = "us-east"
  region    = "us-east-1"
  peer_id   = var.bootstrap_keys["us-east"].peer_id
  node_key  = file(var.bootstrap_keys["us-east"].node_key_file)

  node_image    = var.node_image
  chain_id      = var.chain_id
  instance_type = var.instance_type
  p2p_port      = var.p2p_port
  api_port      = var.api_port
  api_cidrs     = var.api_cidrs
  relay         = var.relay
  seed_domain   = "seed.${var.domain}"
}

module "boot_eu_central" {
  source    = "./node"
  providers = { aws = aws.eu_central }
  name      = "eu-central"
  region    = "eu-central-1"
  peer_id   = var.bootstrap_keys["eu-central"].peer_id
  node_key  = file(var.bootstrap_keys["eu-central"].node_key_file)

  node_image    = var.node_image
  chain_id      = var.chain_id
  instance_type = var.instance_type
  p2p_port      = var.p2p_port
  api_port      = var.api_port
  api_cidrs     = var.api_cidrs
  relay         = var.relay
  seed_domain   = "seed.${var.domain}"
}

module "boot_ap_southeast" {
  source    = "./node"
  providers = { aws = aws.ap_southeast }
  name      = "ap-southeast"
  region    = "ap-southeast-1"
  peer_id   = var.bootstrap_keys["ap-southeast"].peer_id
  node_key  = file(var.bootstrap_keys["ap-southeast"].node_key_file)

  node_image    = var.node_image
  chain_id      = var.chain_id
  instance_type = var.instance_type
  p2p_port      = var.p2p_port
  api_port      = var.api_port
  api_cidrs     = var.api_cidrs
  relay         = var.relay
  seed_domain   = "seed.${var.domain}"
}

module "boot_ap_northeast" {
  source    = "./node"
  providers = { aws = aws.ap_northeast }
  name      = "ap-northeast"
  region    = "ap-northeast-1"
  peer_id   = var.bootstrap_keys["ap-northeast"].peer_id
  node_key  = file(var.bootstrap_keys["ap-northeast"].node_key_file)

  node_image    = var.node_image
  chain_id      = var.chain_id
  instance_type = var.instance_type
  p2p_port      = var.p2p_port
  api_port      = var.api_port
  api_cidrs     = var.api_cidrs
  relay         = var.relay
  seed_domain   = "seed.${var.domain}"
}

module "boot_sa_east" {
  source    = "./node"
  providers = { aws = aws.sa_east }
  name      = "sa-east"
  region    = "sa-east-1"
  peer_id   = var.bootstrap_keys["sa-east"].peer_id
  node_key  = file(var.bootstrap_keys["sa-east"].node_key_file)

  node_image    = var.node_image
  chain_id      = var.chain_id
  instance_type = var.instance_type
  p2p_port      = var.p2p_port
  api_port      = var.api_port
  api_cidrs     = var.api_cidrs
  relay         = var.relay
  seed_domain   = "seed.${var.domain}"
}

locals {
  boot = {
    "us-east"      = module.boot_us_east
    "eu-central"   = module.boot_eu_central
    "ap-southeast" = module.boot_ap_southeast
    "ap-northeast" = module.boot_ap_northeast
    "sa-east"      = module.boot_sa_east
  }
}

# boot-<name>.<domain>: each bootstrap node's fixed address.
resource "aws_route53_record" "boot" {
  provider = aws.us_east
  for_each = local.boot
  zone_id  = var.zone_id
  name     = "boot-${each.key}.${var.domain}"
  type     = "A"
  ttl      = 300
  records  = [each.value.public_ip]
}

# The seeders are authoritative for seed.<domain>: they answer A/AAAA and _dnsaddr TXT records
# with the healthy nodes they found (blyan-node seeder).
resource "aws_route53_record" "seed_ns" {
  provider = aws.us_east
  zone_id  = var.zone_id
  name     = "seed.${var.domain}"
  type     = "NS"
  ttl      = 3600
  records  = [for name, _ in local.boot : "boot-${name}.${var.domain}."]
}

# _dnsaddr.boot.<domain>: a static fallback list of the bootstrap nodes' multiaddrs, for nodes
# whose resolver cannot reach the seeders.
resource "aws_route53_record" "boot_dnsaddr" {
  provider = aws.us_east
  zone_id  = var.zone_id
  name     = "_dnsaddr.boot.${var.domain}"
  type     = "TXT"
  ttl      = 300
  records  = [for name, node in local.boot : "dnsaddr=/ip4/${node.public_ip}/tcp/${var.p2p_port}/p2p/${node.peer_id}"]
}
