variable "region" {
  description = "AWS region of everything but CloudFront's certificate."
  type        = string
  default     = "eu-west-2"
}

variable "environment" {
  description = "Environment name (staging, production, ...), used in resource, log group, parameter and state names."
  type        = string
  default     = "production"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.environment))
    error_message = "environment: lower-case letters, digits and dashes, 2 to 21 characters (it ends up in load balancer names)."
  }
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

variable "private_route_table_ids" {
  description = "Route tables of private_subnet_ids: the S3 gateway endpoint is added to them."
  type        = list(string)
  default     = []
}

variable "create_s3_gateway_endpoint" {
  description = "Create an S3 gateway endpoint on private_route_table_ids (false when the VPC has one already: a route table takes one per service)."
  type        = bool
  default     = true
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener."
  type        = string
}

variable "image" {
  description = "Container image of the gateway: the ECR repository URI (bootstrap/ output ecr_repository_url) with a tag or digest; the deploy passes it."
  type        = string
  validation {
    condition     = can(regex("(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$", var.image)) && !endswith(var.image, ":latest")
    error_message = "image: give an immutable tag or a digest (not :latest, not untagged)."
  }
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

variable "jwt_secret_parameter_name" {
  description = "SSM SecureString parameter holding the JWT secret, created outside Terraform (empty: /mediaserver/<environment>/jwt-secret)."
  type        = string
  default     = ""
  validation {
    condition     = var.jwt_secret_parameter_name == "" || startswith(var.jwt_secret_parameter_name, "/")
    error_message = "jwt_secret_parameter_name: a hierarchical parameter name starting with /."
  }
}

variable "mongodb_uri_parameter_name" {
  description = "SSM SecureString parameter holding the MongoDB URI, created outside Terraform (empty: /mediaserver/<environment>/mongodb-uri)."
  type        = string
  default     = ""
  validation {
    condition     = var.mongodb_uri_parameter_name == "" || startswith(var.mongodb_uri_parameter_name, "/")
    error_message = "mongodb_uri_parameter_name: a hierarchical parameter name starting with /."
  }
}

variable "metrics_token_parameter_name" {
  description = "SSM SecureString parameter holding METRICS_TOKEN, the bearer token scrapers send to /metrics (empty: no token; METRICS_PORT is reachable from operator_security_group_ids only)."
  type        = string
  default     = ""
  validation {
    condition     = var.metrics_token_parameter_name == "" || startswith(var.metrics_token_parameter_name, "/")
    error_message = "metrics_token_parameter_name: a hierarchical parameter name starting with /."
  }
}

variable "metrics_port" {
  description = "METRICS_PORT: the gateway serves /metrics on this port only. Never a load balancer target."
  type        = number
  default     = 9100
  validation {
    condition     = var.metrics_port >= 1024 && var.metrics_port <= 65535
    error_message = "metrics_port: 1024 to 65535 (the gateway runs as an unprivileged user)."
  }
}

variable "operator_security_group_ids" {
  description = "Security groups inside the VPC (a Prometheus, a bastion) that may reach the tasks directly: METRICS_PORT for /metrics, the gateway port for /health/detailed (both answered 404 through the load balancer)."
  type        = list(string)
  default     = []
}

variable "emf_namespace" {
  description = "EMF_NAMESPACE: CloudWatch namespace of the gateway's Embedded Metric Format records (the dashboard reads it)."
  type        = string
  default     = "MediaServer"
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for logs, the bucket, the secrets' SSM parameters and the alarm topic (null: AWS-managed keys, and a key of its own for the alarm topic). Its policy must let CloudWatch Logs and cloudwatch.amazonaws.com use it."
  type        = string
  default     = null
}

variable "alarm_topic_arn" {
  description = "Existing SNS topic for the alarms (empty: a topic is created here, with alarm_email subscribed)."
  type        = string
  default     = ""
}

variable "alarm_email" {
  description = "Address subscribed to the created alarm topic, and the budget's address when budget_alert_emails is empty (empty: none)."
  type        = string
  default     = ""
}

variable "alarm_alb_5xx_per_minute" {
  description = "5xx answered by the load balancer itself per minute (3 minutes of 5) that raise the alarm."
  type        = number
  default     = 10
}

variable "alarm_latency_p99_seconds" {
  description = "p99 target response time (seconds, 15 minutes) that raises the alarm. Upload PATCH requests count too."
  type        = number
  default     = 30
}

variable "monthly_budget_usd" {
  description = "Monthly cost budget of this environment (its Stack tag) in USD."
  type        = number
  default     = 300
}

variable "budget_alert_emails" {
  description = "Addresses told when 80% of the monthly budget is spent or the forecast exceeds it (empty: alarm_email; both empty: no budget)."
  type        = list(string)
  default     = []
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
