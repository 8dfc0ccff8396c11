terraform {
  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
}

resource "aws_security_group" "boot" {
  name        = "blyan-boot-${var.name}"
  description = "Blyan bootstrap node: libp2p (TCP and QUIC), DNS seeder, API for operators"

  ingress {
    description = "libp2p TCP (TLS 1.3), relay circuits and hole punching"
    protocol    = "tcp"
    from_port   = var.p2p_port
    to_port     = var.p2p_port
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    description = "libp2p QUIC"
    protocol    = "udp"
    from_port   = var.p2p_port
    to_port     = var.p2p_port
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    description = "DNS seeder (UDP)"
    protocol    = "udp"
    from_port   = 53
    to_port     = 53
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    description = "DNS seeder (TCP)"
    protocol    = "tcp"
    from_port   = 53
    to_port     = 53
    cidr_blocks = ["0.0.0.0/0"]
  }

  dynamic "ingress" {
    for_each = length(var.api_cidrs) > 0 ? [1] : []
    content {
      description = "HTTP API for operators"
      protocol    = "tcp"
      from_port   = var.api_port
      to_port     = var.api_port
      cidr_blocks = var.api_cidrs
    }
  }

  egress {
    protocol    = "-1"
    from_port   = 0
    to_port     = 0
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_instance" "boot" {
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_type
  vpc_security_group_ids = [aws_security_group.boot.id]
  user_data_replace_on_change = true

  # cloud-init: Docker, the node's key, then the node (relay server on) and the seeder.
  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    node_image  = var.node_image
    chain_id    = var.chain_id
    moniker     = "boot-${var.name}"
    node_key    = var.node_key
    p2p_port    = var.p2p_port
    api_port    = var.api_port
    relay       = var.relay
    seed_domain = var.seed_domain
    peer_id     = var.peer_id
  })

  root_block_device {
    volume_size = 40
    encrypted   = true
  }

  tags = {
    Name   = "blyan-boot-${var.name}"
    Region = var.region
  }
}

resource "aws_eip" "boot" {
  instance = aws_instance.boot.id
  domain   = "vpc"
}

output "public_ip" {
  value = aws_eip.boot.public_ip
}

output "peer_id" {
  value = var.peer_id
}
