output "bootstrap_multiaddrs" {
  description = "The bootstrap entries for a node's p2p.bootstrap."
  value       = [for name, node in local.boot : "/ip4/${node.public_ip}/tcp/${var.p2p_port}/p2p/${node.peer_id}"]
}

output "bootstrap_dns" {
  description = "The DNS seed domains for a node's p2p.bootstrap_dns."
  value       = ["seed.${var.domain}", "boot.${var.domain}"]
}
