terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

# One provider per region: a bootstrap node in each, on three continents and both hemispheres.
provider "aws" {
  alias  = "us_east"
  region = "us-east-1"
}

provider "aws" {
  alias  = "eu_central"
  region = "eu-central-1"
}

provider "aws" {
  alias  = "ap_southeast"
  region = "ap-southeast-1"
}

provider "aws" {
  alias  = "ap_northeast"
  region = "ap-northeast-1"
}

provider "aws" {
  alias  = "sa_east"
  region = "sa-east-1"
}
