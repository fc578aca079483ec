# Once per AWS account, before any environment: the bucket that holds every environment's Terraform
# state (S3-native locking, no lock table) and the ECR repository CI pushes the gateway image to.
# This stack keeps its own small state locally (bootstrap/terraform.tfstate, ignored by git; it
# holds no secret): keep a copy, or re-create it with `terraform import` if lost.

terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Project   = "mediaserver"
      Stack     = "mediaserver-bootstrap"
      ManagedBy = "terraform"
    }
  }
}
