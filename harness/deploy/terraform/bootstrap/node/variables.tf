variable "name" {
  description = "Short name of the bootstrap node (its region's)."
  type        = string
}

variable "region" {
  description = "The AWS region (must match the provider passed in)."
  type        = string
}

variable "peer_id" {
  description = "The libp2p peer id of node_key."
  type        = string
}

variable "node_key" {
  description = "Contents of the node's keys/node_key.json."
  type        = string
  sensitive   = true
}

variable "node_image" {
  type = string
}

variable "chain_id" {
  type = string
}

variable "instance_type" {
  type = string
}

variable "p2p_port" {
  type = number
}

variable "api_port" {
  type = number
}

variable "api_cidrs" {
  type = list(string)
}

variable "relay" {
  type = bool
}

variable "seed_domain" {
  description = "The domain the seeder on this host answers for."
  type        = string
}
