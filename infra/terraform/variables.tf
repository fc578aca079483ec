variable "region" {
  description = "AWS region of everything but CloudFront's certificate."
  type        = string
  default     = "eu-west-2"
}

variable "environment" {
  description = "Environment name (staging, production, ...), used in resource names."
  type        = string
  default     = "production"
}

variable "vpc_id" {
  description = "VPC the service runs in."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets for the load balancer (at least two AZs)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Private subnets (with NAT or VPC endpoints) for the Fargate tasks."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener."
  type        = string
}

variable "image" {
  description = "Container image (ECR URI with tag) of the gateway."
  type        = string
}

variable "container_port" {
  description = "Port the gateway listens on in the container."
  type        = number
  default     = 3000
}

variable "task_cpu" {
  description = "Fargate task CPU units."
  type        = number
  default     = 256
}

variable "task_memory" {
  description = "Fargate task memory (MiB)."
  type        = number
  default     = 512
}

variable "desired_count" {
  description = "Tasks at start."
  type        = number
  default     = 2
}

variable "min_count" {
  description = "Fewest tasks autoscaling keeps."
  type        = number
  default     = 2
}

variable "max_count" {
  description = "Most tasks autoscaling starts."
  type        = number
  default     = 10
}

variable "bucket_name" {
  description = "Name of the media bucket (globally unique)."
  type        = string
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which S3 aborts multipart uploads nobody completed (the gateway's reaper does it sooner)."
  type        = number
  default     = 7
}

variable "cors_allowed_origins" {
  description = "Origins allowed to read media from the bucket in browsers (presigned URLs)."
  type        = list(string)
  default     = ["*"]
}

variable "mongodb_uri" {
  description = "MongoDB connection string (stored as an SSM SecureString)."
  type        = string
  sensitive   = true
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for logs, SSM parameters and SNS (null: AWS-managed keys)."
  type        = string
  default     = null
}

variable "alarm_email" {
  description = "Address subscribed to the alarm topic (empty: none)."
  type        = string
  default     = ""
}

variable "enable_cloudfront" {
  description = "Put a CloudFront distribution in front of the load balancer."
  type        = bool
  default     = false
}

variable "domain_name" {
  description = "DNS name of the service (empty: no Route 53 record)."
  type        = string
  default     = ""
}

variable "route53_zone_id" {
  description = "Hosted zone for domain_name."
  type        = string
  default     = ""
}

variable "cloudfront_certificate_arn" {
  description = "ACM certificate in us-east-1 for CloudFront (needed with enable_cloudfront and domain_name)."
  type        = string
  default     = ""
}

variable "alb_access_log_bucket" {
  description = "Bucket for load balancer access logs (empty: off)."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the gateway's logs."
  type        = number
  default     = 30
}
