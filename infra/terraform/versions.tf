terraform {
  # 1.10: S3-native state locking (use_lockfile) without a DynamoDB table.
  required_version = ">= 1.10"

  # Remote state in S3, locked by a lock object next to the state (use_lockfile). Partial
  # configuration: bucket, key and region come from `terraform init -backend-config=FILE`
  # (see backend/example.s3.tfbackend); the bucket is created once per account by bootstrap/.
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

locals {
  # One value per environment, for cost allocation (budget.tf).
  stack_tag = "mediaserver-${var.environment}"
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Project     = "mediaserver"
      Environment = var.environment
      Stack       = local.stack_tag
      ManagedBy   = "terraform"
    }
  }
}
