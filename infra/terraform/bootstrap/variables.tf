variable "region" {
  description = "AWS region of the state bucket and the image repository."
  type        = string
  default     = "eu-west-2"
}

variable "state_bucket_name" {
  description = "Name of the Terraform state bucket (globally unique, e.g. <company>-mediaserver-tfstate-<account id>)."
  type        = string
}

variable "ecr_repository_name" {
  description = "ECR repository of the gateway image (the Jenkinsfile and ansible/ push to 'mediaserver')."
  type        = string
  default     = "mediaserver"
}

variable "ecr_keep_images" {
  description = "Newest images kept in ECR (older ones expire; a rollback can go back this far)."
  type        = number
  default     = 50
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the state bucket and the repository (null: SSE-S3 and AES256)."
  type        = string
  default     = null
}

variable "state_noncurrent_days" {
  description = "Days old state versions are kept (to recover from a bad apply)."
  type        = number
  default     = 90
}
