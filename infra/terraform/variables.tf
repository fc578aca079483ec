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

# --- queue-driven processing (queue.tf, worker.tf)

variable "worker_enabled" {
  description = "Run media processing in its own ECS service fed by an SQS queue (the gateway then sends jobs and processes none: PROCESSING_CONCURRENCY=0). false: no queue and no worker; the gateway processes in-process as before."
  type        = bool
  default     = true
}

variable "worker_task_cpu" {
  description = "Fargate CPU units of a worker task (1024 = 1 vCPU)."
  type        = number
  default     = 1024
}

variable "worker_task_memory" {
  description = "Fargate memory of a worker task (MiB); must be a valid Fargate combination with worker_task_cpu."
  type        = number
  default     = 2048
}

variable "worker_min_count" {
  description = "Fewest worker tasks autoscaling keeps (0: none while the queue is empty; the first message starts one)."
  type        = number
  default     = 0
  validation {
    condition     = var.worker_min_count >= 0
    error_message = "worker_min_count: 0 or more."
  }
}

variable "worker_max_count" {
  description = "Most worker tasks autoscaling starts."
  type        = number
  default     = 10
  validation {
    condition     = var.worker_max_count >= 1
    error_message = "worker_max_count: at least 1."
  }
}

variable "worker_backlog_per_task" {
  description = "Messages waiting in the queue per running worker task that scaling aims for: about the wait you accept (s) divided by the seconds a job takes, times worker_processing_concurrency."
  type        = number
  default     = 20
  validation {
    condition     = var.worker_backlog_per_task > 0
    error_message = "worker_backlog_per_task: more than 0."
  }
}

variable "worker_processing_concurrency" {
  description = "PROCESSING_CONCURRENCY of a worker task: jobs one task runs at once."
  type        = number
  default     = 2
  validation {
    condition     = var.worker_processing_concurrency >= 1
    error_message = "worker_processing_concurrency: at least 1 (0 would make a worker that processes nothing)."
  }
}

variable "worker_port" {
  description = "WORKER_PORT: the worker serves /health and /metrics on this port only (no load balancer; reachable from operator_security_group_ids)."
  type        = number
  default     = 3001
  validation {
    condition     = var.worker_port >= 1024 && var.worker_port <= 65535
    error_message = "worker_port: 1024 to 65535 (the worker runs as an unprivileged user)."
  }
}

variable "worker_on_demand_base" {
  description = "Worker tasks that always run on on-demand FARGATE before any goes to FARGATE_SPOT (capacity provider base)."
  type        = number
  default     = 1
  validation {
    condition     = var.worker_on_demand_base >= 0
    error_message = "worker_on_demand_base: 0 or more."
  }
}

variable "worker_on_demand_weight" {
  description = "Weight of on-demand FARGATE for worker tasks beyond the base (against worker_spot_weight): the share that keeps processing going when Spot capacity is short or reclaimed."
  type        = number
  default     = 1
  validation {
    condition     = var.worker_on_demand_weight >= 0 && var.worker_on_demand_weight <= 1000
    error_message = "worker_on_demand_weight: 0 to 1000."
  }
}

variable "worker_spot_weight" {
  description = "Weight of FARGATE_SPOT for worker tasks beyond the base (jobs are retried, so a reclaimed Spot task loses no work)."
  type        = number
  default     = 3
  validation {
    condition     = var.worker_spot_weight >= 1 && var.worker_spot_weight <= 1000
    error_message = "worker_spot_weight: 1 to 1000 (Spot is what makes the worker service cheap)."
  }
}

variable "processing_max_attempts" {
  description = "PROCESSING_MAX_ATTEMPTS: deliveries of a job before it goes to the dead-letter queue (the queue's redrive maxReceiveCount) and its media is marked failed."
  type        = number
  default     = 3
  validation {
    condition     = var.processing_max_attempts >= 1 && var.processing_max_attempts <= 1000
    error_message = "processing_max_attempts: 1 to 1000 (SQS maxReceiveCount)."
  }
}

variable "processing_visibility_timeout" {
  description = "PROCESSING_VISIBILITY_TIMEOUT and the queue's visibility timeout (s): how long a received job stays hidden before another worker may take it; the worker extends it while a long video runs."
  type        = number
  default     = 120
  validation {
    condition     = var.processing_visibility_timeout >= 10 && var.processing_visibility_timeout <= 43200
    error_message = "processing_visibility_timeout: 10 s to 12 hours (SQS's maximum)."
  }
}

variable "processing_queue_retention_seconds" {
  description = "Seconds the processing queue keeps a job nobody completed (default 4 days)."
  type        = number
  default     = 345600
  validation {
    condition     = var.processing_queue_retention_seconds >= 60 && var.processing_queue_retention_seconds <= 1209600
    error_message = "processing_queue_retention_seconds: 60 s to 14 days."
  }
}

variable "processing_dead_letter_retention_seconds" {
  description = "Seconds the dead-letter queue keeps failed jobs for inspection or redrive (default 14 days, SQS's maximum). Longer than the queue's own retention: a message keeps its first enqueue time when it moves."
  type        = number
  default     = 1209600
  validation {
    condition     = var.processing_dead_letter_retention_seconds >= 60 && var.processing_dead_letter_retention_seconds <= 1209600
    error_message = "processing_dead_letter_retention_seconds: 60 s to 14 days."
  }
}

variable "alarm_queue_oldest_message_seconds" {
  description = "Age (s) of the oldest job waiting in the processing queue that raises the alarm (workers at worker_max_count, or none can start)."
  type        = number
  default     = 900
}

# --- webhooks (hooks.tf; README "Webhooks"): off unless hook_url or hook_sqs_enabled is set

variable "hook_url" {
  description = "HOOK_URL of the gateway and the worker: the integrator's endpoint receiving the signed JSON events (empty: no webhooks)."
  type        = string
  default     = ""
  validation {
    condition     = var.hook_url == "" || can(regex("^https://[^/?#:@[:space:]]+(:443)?([/?#]|$)", var.hook_url))
    error_message = "hook_url: an https:// URL on port 443 (events carry user names and upload metadata; the tasks may reach HTTPS on 443 only, network.tf)."
  }
}

variable "hook_secret_parameter_name" {
  description = "SSM SecureString parameter holding HOOK_SECRET, the HMAC key of the Mediaserver-Signature (16 characters or more), created outside Terraform (empty with hook_url: /mediaserver/<environment>/hook-secret)."
  type        = string
  default     = ""
  validation {
    condition     = var.hook_secret_parameter_name == "" || startswith(var.hook_secret_parameter_name, "/")
    error_message = "hook_secret_parameter_name: a hierarchical parameter name starting with /."
  }
  validation {
    condition     = var.hook_secret_parameter_name == "" || var.hook_url != ""
    error_message = "hook_secret_parameter_name: only with hook_url (only the HTTP requests are signed)."
  }
}

variable "hook_events" {
  description = "HOOK_EVENTS: the events sent (pre-create, post-create, post-receive, post-finish, post-terminate, media-ready, media-failed; pre-create goes to hook_url only). null: the gateway's default, all but post-receive."
  type        = list(string)
  default     = null
  validation {
    condition = var.hook_events == null ? true : length(var.hook_events) > 0 && alltrue([
      for event in var.hook_events : contains(["pre-create", "post-create", "post-receive", "post-finish", "post-terminate", "media-ready", "media-failed"], event)
    ])
    error_message = "hook_events: one or more of pre-create, post-create, post-receive, post-finish, post-terminate, media-ready, media-failed (null: the gateway's default)."
  }
  validation {
    condition     = var.hook_events == null || var.hook_url != "" || var.hook_sqs_enabled
    error_message = "hook_events: only with hook_url or hook_sqs_enabled."
  }
}

variable "hook_sqs_enabled" {
  description = "Create an encrypted SQS queue receiving the same events (HOOK_SQS_QUEUE_URL; the gateway's role may only SendMessage to it). Integrators consume it with their own IAM permissions (outputs hook_queue_url, hook_queue_arn)."
  type        = bool
  default     = false
}

variable "hook_queue_retention_seconds" {
  description = "Seconds the hook queue keeps an event nobody received (default 14 days, SQS's maximum: a consumer may be down over a long weekend)."
  type        = number
  default     = 1209600
  validation {
    condition     = var.hook_queue_retention_seconds >= 60 && var.hook_queue_retention_seconds <= 1209600
    error_message = "hook_queue_retention_seconds: 60 s to 14 days."
  }
}

variable "alarm_hook_queue_oldest_message_seconds" {
  description = "Age (s) of the oldest event waiting in the hook queue that raises the alarm: its consumer has stopped, and events expire after hook_queue_retention_seconds."
  type        = number
  default     = 86400
}

# --- an external identity provider (identity.tf; README "Identity provider (OIDC) settings")

variable "jwt_jwks_url" {
  description = "JWT_JWKS_URL: JWKS of an identity provider whose RS256/ES256 access tokens the gateway accepts besides its own (empty: none). Needs jwt_issuer and jwt_audience."
  type        = string
  default     = ""
  validation {
    condition     = var.jwt_jwks_url == "" || can(regex("^https://[^/?#:@[:space:]]+(:443)?([/?#]|$)", var.jwt_jwks_url))
    error_message = "jwt_jwks_url: an https:// URL on port 443 (production mode refuses http; the tasks may reach HTTPS on 443 only, network.tf)."
  }
}

variable "jwt_issuer" {
  description = "JWT_ISSUER: the `iss` the identity provider's tokens must carry (required with jwt_jwks_url)."
  type        = string
  default     = ""
  validation {
    condition     = (var.jwt_issuer == "") == (var.jwt_jwks_url == "")
    error_message = "jwt_issuer: required with jwt_jwks_url (tokens of any issuer would be accepted otherwise), and only with it."
  }
  validation {
    condition     = var.jwt_issuer == "" || can(regex("^https://[^/?#[:space:]]+", var.jwt_issuer))
    error_message = "jwt_issuer: an https:// URL, exactly as the provider's tokens carry it (OpenID Connect issuers are https URLs)."
  }
}

variable "jwt_audience" {
  description = "JWT_AUDIENCE: the `aud` the identity provider's tokens must carry, this API's identifier (required with jwt_jwks_url)."
  type        = string
  default     = ""
  validation {
    condition     = (var.jwt_audience == "") == (var.jwt_jwks_url == "")
    error_message = "jwt_audience: required with jwt_jwks_url (tokens meant for any other API would be accepted otherwise), and only with it."
  }
}

variable "jwt_role_claim" {
  description = "JWT_ROLE_CLAIM: claim of the provider's tokens naming the caller's role; dots reach into objects, e.g. realm_access.roles (empty: the gateway's default, role)."
  type        = string
  default     = ""
  validation {
    condition     = var.jwt_role_claim == "" || (var.jwt_jwks_url != "" && can(regex("^[^[:space:]]+$", var.jwt_role_claim)))
    error_message = "jwt_role_claim: only with jwt_jwks_url, and without spaces."
  }
}

variable "jwt_admin_roles" {
  description = "JWT_ADMIN_ROLES: values of jwt_role_claim that make the caller a gateway admin (empty: the gateway's default, admin)."
  type        = list(string)
  default     = []
  validation {
    condition     = length(var.jwt_admin_roles) == 0 || (var.jwt_jwks_url != "" && alltrue([for role in var.jwt_admin_roles : can(regex("^[^,[:space:]]+$", role))]))
    error_message = "jwt_admin_roles: only with jwt_jwks_url; each role without commas or spaces."
  }
}
