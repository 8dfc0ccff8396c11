variable "node_image" {
  description = "The node image every bootstrap node runs (the image `devnet image` builds, pushed to a registry the hosts can pull from)."
  type        = string
  default     = "blyan-node:0.1.0"
}

variable "chain_id" {
  description = "The chain the bootstrap nodes join."
  type        = string
  default     = "blyan-testnet"
}

variable "instance_type" {
  description = "EC2 instance type of each bootstrap node."
  type        = string
  default     = "t3.small"
}

variable "zone_id" {
  description = "Route 53 hosted zone that holds the bootstrap and seed records."
  type        = string
}

variable "domain" {
  description = "The zone's domain: bootstrap nodes get boot-<region>.<domain>, the seeder answers for seed.<domain>."
  type        = string
}

variable "p2p_port" {
  description = "libp2p TCP (TLS 1.3) and QUIC port."
  type        = number
  default     = 26656
}

variable "api_port" {
  description = "HTTP API port (health checks; keep it closed to the world with api_cidrs)."
  type        = number
  default     = 26657
}

variable "api_cidrs" {
  description = "Who may reach the HTTP API (operators, monitoring)."
  type        = list(string)
  default     = []
}

variable "relay" {
  description = "Bootstrap nodes also serve circuit relay v2 for nodes behind NAT."
  type        = bool
  default     = true
}

variable "bootstrap_keys" {
  description = "Per bootstrap node (us-east, eu-central, ap-southeast, ap-northeast, sa-east): its peer id and the node key file made by `blyan-node init --home keys/<name>` (keys/<name>/keys/node_key.json), so that the bootstrap addresses are known before the hosts exist."
  type = map(object({
    peer_id       = string
    node_key_file = string
  }))
}
