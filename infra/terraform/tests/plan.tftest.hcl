# `terraform test` with a mocked AWS provider: plans the stack without credentials or network and
# checks what the static checks cannot see (values after expressions, counts, preconditions,
# variable validation). scripts/check_infra.sh runs it when a terraform binary is installed.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_ec2_managed_prefix_list" {
    defaults = { id = "pl-cloudfront0000" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  # ARN-shaped values where the provider validates ARNs (the "dashboard" run applies to the mock)
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-2:123456789012:loadbalancer/app/mediaserver-production/0123456789abcdef", arn_suffix = "app/mediaserver-production/0123456789abcdef" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/mediaserver-production/0123456789abcdef", arn_suffix = "targetgroup/mediaserver-production/0123456789abcdef" }
  }
  mock_resource "aws_lb_listener" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-2:123456789012:listener/app/mediaserver-production/0123456789abcdef/0123456789abcdef" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mediaserver-production-mock" }
  }
  mock_resource "aws_sns_topic" {
    defaults = { arn = "arn:aws:sns:eu-west-2:123456789012:mediaserver-production-alarms" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-2:123456789012:key/00000000-0000-0000-0000-000000000000" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:eu-west-2:123456789012:cluster/mediaserver-production", id = "arn:aws:ecs:eu-west-2:123456789012:cluster/mediaserver-production" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = { arn = "arn:aws:ecs:eu-west-2:123456789012:task-definition/mediaserver-production:1" }
  }
  mock_resource "aws_cloudwatch_metric_alarm" {
    defaults = { arn = "arn:aws:cloudwatch:eu-west-2:123456789012:alarm:mediaserver-production-mock" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::example-mediaserver-media" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-2:123456789012:log-group:/mediaserver/production" }
  }
}

# The queues' URLs and ARNs are known after apply only; the gateway's and the worker's environment
# carry them, so plans get these values (as a real queue would have). The other computed
# attributes get fixed values too, so the "dashboard" run's apply matches its plan.
override_resource {
  target          = aws_sqs_queue.processing
  override_during = plan
  values = {
    url  = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-processing"
    id   = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-processing"
    arn  = "arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-processing"
    name = "mediaserver-production-processing"
    # computed attributes
    name_prefix = "", policy = "", redrive_allow_policy = "", deduplication_scope = "", fifo_throughput_limit = ""
  }
}

override_resource {
  target          = aws_sqs_queue.processing_dead_letter
  override_during = plan
  values = {
    url  = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-processing-dead-letter"
    id   = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-processing-dead-letter"
    arn  = "arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-processing-dead-letter"
    name = "mediaserver-production-processing-dead-letter"
    # computed attributes
    name_prefix    = "", policy = "", redrive_allow_policy = "", deduplication_scope = "", fifo_throughput_limit = ""
    redrive_policy = ""
  }
}

override_resource {
  target          = aws_sqs_queue.hooks
  override_during = plan
  values = {
    url  = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-hooks"
    id   = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-hooks"
    arn  = "arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-hooks"
    name = "mediaserver-production-hooks"
    # computed attributes
    name_prefix    = "", policy = "", redrive_allow_policy = "", deduplication_scope = "", fifo_throughput_limit = ""
    redrive_policy = ""
  }
}

variables {
  environment             = "production"
  vpc_id                  = "vpc-0123456789abcdef0"
  public_subnet_ids       = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"]
  private_subnet_ids      = ["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"]
  private_route_table_ids = ["rtb-0ccccccccccccccc1", "rtb-0ccccccccccccccc2"]
  certificate_arn         = "arn:aws:acm:eu-west-2:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  bucket_name             = "example-mediaserver-media"
  image                   = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/mediaserver:0123456789ab"
}

run "alb_only" {
  command = plan

  assert {
    condition     = aws_lb.main.idle_timeout == 60
    error_message = "ALB idle timeout must be 60 s."
  }
  assert {
    condition     = { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["IDLE_CONNECTION_TIMEOUT"] == "120"
    error_message = "IDLE_CONNECTION_TIMEOUT must be 120 (longer than the ALB idle timeout)."
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].stopTimeout == 120
    error_message = "stopTimeout must be 120 s."
  }
  assert {
    condition = (
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["SHUTDOWN_TIMEOUT"] == "90" &&
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["ENVIRONMENT"] == "production" &&
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["S3_SSE"] == "" &&
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["METRICS_PORT"] == "9100" &&
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["TRUSTED_PROXY_HOPS"] == "1"
    )
    error_message = "Task environment: SHUTDOWN_TIMEOUT=90, ENVIRONMENT=production, S3_SSE empty, METRICS_PORT=9100, TRUSTED_PROXY_HOPS=1 behind the ALB alone."
  }
  assert {
    condition = (
      { for s in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].secrets : s.name => s.valueFrom } ==
      {
        JWT_SECRET  = "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/jwt-secret"
        MONGODB_URI = "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/mongodb-uri"
      }
    )
    error_message = "Secrets must be referenced by the ARNs of the parameters created outside Terraform."
  }
  assert {
    condition     = !strcontains(aws_ecs_task_definition.gateway.container_definitions, "\"value\":\"mongodb")
    error_message = "No MongoDB URI in the task definition."
  }
  assert {
    condition     = aws_lb_target_group.gateway.port == 3000
    error_message = "Only the gateway port is a target."
  }
  assert {
    condition     = toset(one(one(aws_lb_listener_rule.internal_routes.condition).path_pattern).values) == toset(["/health/detailed", "/health/detailed/*", "/metrics", "/metrics/*"])
    error_message = "/health/detailed and /metrics must be answered 404 by the ALB."
  }
  assert {
    condition     = one(aws_lb_listener_rule.internal_routes.action).fixed_response[0].status_code == "404"
    error_message = "Internal routes: 404."
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.alb_https) == 1 && length(aws_vpc_security_group_ingress_rule.alb_https_cloudfront) == 0
    error_message = "Without CloudFront, HTTPS is open to clients."
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.tasks_metrics) == 0 && length(aws_vpc_security_group_ingress_rule.tasks_operators) == 0
    error_message = "The tasks admit only the load balancer unless operators are named."
  }
  assert {
    condition     = aws_vpc_endpoint.s3[0].vpc_endpoint_type == "Gateway" && toset(aws_vpc_endpoint.s3[0].route_table_ids) == toset(var.private_route_table_ids)
    error_message = "The S3 gateway endpoint goes on the private route tables."
  }
  assert {
    condition     = aws_cloudwatch_log_group.gateway.name == "/mediaserver/production"
    error_message = "One log group per environment."
  }
  assert {
    condition     = length(aws_sns_topic.alarms) == 1 && length(aws_kms_key.alarms) == 1
    error_message = "Without alarm_topic_arn and kms_key_arn: a topic with a key CloudWatch may use."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.latency_p99.extended_statistic == "p99"
    error_message = "Latency alarm on p99."
  }
  assert {
    condition     = length(aws_budgets_budget.monthly) == 0
    error_message = "No budget without an address to tell."
  }
  # webhooks and an identity provider are off unless asked for
  assert {
    condition = (
      length([for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name if startswith(e.name, "HOOK_") || startswith(e.name, "JWT_")]) == 0 &&
      length([for e in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].environment : e.name if startswith(e.name, "HOOK_") || startswith(e.name, "JWT_")]) == 0 &&
      !contains([for s in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].secrets : s.name], "HOOK_SECRET")
    )
    error_message = "Without hook_url, hook_sqs_enabled and jwt_jwks_url: no HOOK_* or JWT_* environment, no HOOK_SECRET."
  }
  assert {
    condition = (
      length(aws_sqs_queue.hooks) == 0 && length(aws_sqs_queue_policy.hooks) == 0 && length(aws_cloudwatch_metric_alarm.hook_queue_oldest_message) == 0 &&
      !contains([for s in data.aws_iam_policy_document.task.statement : s.sid], "SendHookEvents") &&
      output.hook_queue_url == null && output.hook_queue_arn == null
    )
    error_message = "Without hook_sqs_enabled: no hook queue, no SQS statement for it, null outputs."
  }
}

run "behind_cloudfront" {
  command = plan

  variables {
    enable_cloudfront            = true
    alarm_topic_arn              = "arn:aws:sns:eu-west-2:123456789012:ops"
    budget_alert_emails          = ["ops@example.com"]
    operator_security_group_ids  = ["sg-0prometheus00000"]
    metrics_token_parameter_name = "/mediaserver/production/metrics-token"
  }

  assert {
    condition     = { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["TRUSTED_PROXY_HOPS"] == "2"
    error_message = "TRUSTED_PROXY_HOPS=2 with CloudFront and the ALB."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.alb_https_cloudfront[0].prefix_list_id == "pl-cloudfront0000" && length(aws_vpc_security_group_ingress_rule.alb_https) == 0 && length(aws_vpc_security_group_ingress_rule.alb_http) == 0
    error_message = "With CloudFront the ALB admits CloudFront's origin-facing prefix list only."
  }
  assert {
    condition     = data.aws_ec2_managed_prefix_list.cloudfront[0].name == "com.amazonaws.global.cloudfront.origin-facing"
    error_message = "CloudFront's origin-facing managed prefix list."
  }
  assert {
    condition     = alltrue([for o in aws_cloudfront_distribution.gateway[0].origin : o.custom_origin_config[0].origin_keepalive_timeout == 50])
    error_message = "CloudFront's origin keep-alive must be below the ALB idle timeout."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.tasks_metrics["sg-0prometheus00000"].from_port == 9100 && aws_vpc_security_group_ingress_rule.tasks_operators["sg-0prometheus00000"].from_port == 3000
    error_message = "Operators reach METRICS_PORT and the gateway port."
  }
  assert {
    condition     = contains([for s in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].secrets : s.name], "METRICS_TOKEN")
    error_message = "METRICS_TOKEN comes from its parameter when named."
  }
  assert {
    condition     = length(aws_sns_topic.alarms) == 0 && aws_cloudwatch_metric_alarm.alb_5xx.alarm_actions == toset(["arn:aws:sns:eu-west-2:123456789012:ops"])
    error_message = "Alarms go to alarm_topic_arn when given."
  }
  assert {
    condition     = one(aws_budgets_budget.monthly[0].cost_filter).values[0] == "user:Stack$mediaserver-production"
    error_message = "The budget counts this environment's Stack tag."
  }
}

# Applied against the mock (computed attributes such as alarm ARNs get values): the dashboard
# shows the gateway's EMF metrics, the ALB's and ECS's, and the two Logs Insights widgets.
run "dashboard" {
  command = apply

  assert {
    condition = alltrue([for text in [
      "\"MediaServer\",\"UploadBytes\"", "\"UploadsCompleted\"", "MetricName=\\\"RequestLatency\\\"", "MetricName=\\\"ServerErrors\\\"",
      "HTTPCode_Target_4XX_Count", "HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count", "TargetResponseTime", "\"p99\"",
      "CPUUtilization", "MemoryUtilization", "SOURCE '/mediaserver/production'", "/files/{id}", "media processed",
    ] : strcontains(aws_cloudwatch_dashboard.gateway.dashboard_body, text)])
    error_message = "The dashboard must show ingest, uploads in progress, 4xx/5xx, p99 latency, processing backlog, CPU and memory."
  }
  assert {
    condition     = length(jsondecode(aws_cloudwatch_dashboard.gateway.dashboard_body).widgets) == 9
    error_message = "Nine widgets: eight, and the processing queue's with the worker service."
  }
  assert {
    condition = alltrue([for text in [
      "ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible", "mediaserver-production-processing-dead-letter",
      "RunningTaskCount\",\"ClusterName\",\"mediaserver-production\",\"ServiceName\",\"mediaserver-worker",
    ] : strcontains(aws_cloudwatch_dashboard.gateway.dashboard_body, text)])
    error_message = "The dashboard must show the processing queue, its dead-letter queue and the worker tasks."
  }
  assert {
    condition     = length(one([for w in jsondecode(aws_cloudwatch_dashboard.gateway.dashboard_body).widgets : w if w.type == "alarm"]).properties.alarms) == 9
    error_message = "The alarms widget lists the seven gateway alarms and the two queue alarms."
  }
}

run "mutable_image_tag_refused" {
  command = plan
  variables {
    image = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/mediaserver:latest"
  }
  expect_failures = [var.image]
}

run "endpoint_needs_route_tables" {
  command = plan
  variables {
    private_route_table_ids = []
  }
  expect_failures = [aws_vpc_endpoint.s3]
}

run "metrics_port_never_the_routed_port" {
  command = plan
  variables {
    metrics_port = 3000
  }
  expect_failures = [aws_ecs_task_definition.gateway]
}

# --- queue-driven processing (queue.tf, worker.tf, iam.tf)

run "worker_service" {
  command = plan

  # the worker: the gateway's image running `mediaserver worker`, its own task size, no load balancer
  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].image == var.image &&
      jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].command == ["mediaserver", "worker"] &&
      aws_ecs_task_definition.worker[0].cpu == "1024" && aws_ecs_task_definition.worker[0].memory == "2048"
    )
    error_message = "The worker runs the gateway's image with `mediaserver worker`, 1 vCPU and 2 GiB by default."
  }
  assert {
    condition     = length(aws_ecs_service.worker[0].load_balancer) == 0 && length(jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].portMappings) == 1
    error_message = "No load balancer for the worker; its one port is WORKER_PORT."
  }
  assert {
    condition = (
      { for s in aws_ecs_service.worker[0].capacity_provider_strategy : s.capacity_provider => [coalesce(s.base, 0), s.weight] } ==
      { FARGATE = [1, 1], FARGATE_SPOT = [0, 3] }
    )
    error_message = "Worker tasks: FARGATE_SPOT weighted 3, on-demand FARGATE as the base (1) and weighted 1."
  }
  assert {
    condition     = toset(aws_ecs_cluster_capacity_providers.main.capacity_providers) == toset(["FARGATE", "FARGATE_SPOT"])
    error_message = "The cluster offers FARGATE and FARGATE_SPOT."
  }
  assert {
    condition = (
      one(aws_ecs_service.worker[0].network_configuration).assign_public_ip == false &&
      toset(one(aws_ecs_service.worker[0].network_configuration).subnets) == toset(var.private_subnet_ids)
    )
    error_message = "Workers run in the private subnets without a public address."
  }
  assert {
    condition = (
      { for e in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].environment : e.name => e.value } == {
        HOST                             = "0.0.0.0"
        ENVIRONMENT                      = "production"
        STORAGE_BACKEND                  = "s3"
        S3_BUCKET                        = "example-mediaserver-media"
        S3_SSE                           = ""
        AWS_REGION                       = "eu-west-2"
        SHUTDOWN_TIMEOUT                 = "90"
        EMF_NAMESPACE                    = "MediaServer"
        LOG_FORMAT                       = "json"
        DATA_DIR                         = "/tmp/mediaserver"
        WORKER_PORT                      = "3001"
        PROCESSING_CONCURRENCY           = "2"
        PROCESSING_MEMORY_BUDGET         = "1024MiB"
        PROCESSING_QUEUE_URL             = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-processing"
        PROCESSING_DEAD_LETTER_QUEUE_URL = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-processing-dead-letter"
        PROCESSING_MAX_ATTEMPTS          = "3"
        PROCESSING_VISIBILITY_TIMEOUT    = "120"
      }
    )
    error_message = "Worker environment: the queues, max attempts 3, visibility timeout 120 s, WORKER_PORT 3001, production mode."
  }
  assert {
    condition = (
      { for s in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].secrets : s.name => s.valueFrom } ==
      {
        JWT_SECRET  = "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/jwt-secret"
        MONGODB_URI = "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/mongodb-uri"
      }
    )
    error_message = "The worker reads the MongoDB URI's and the JWT secret's parameters (production mode refuses to start without the latter)."
  }
  assert {
    condition = (
      strcontains(jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].healthCheck.command[3], "http://127.0.0.1:3001/health") &&
      jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].logConfiguration.options["awslogs-stream-prefix"] == "worker" &&
      jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].logConfiguration.options["awslogs-group"] == "/mediaserver/production"
    )
    error_message = "The container health check asks WORKER_PORT's /health; logs go to CloudWatch under the worker prefix."
  }
  # the gateway hands jobs to the queue and processes none
  assert {
    condition = (
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["PROCESSING_QUEUE_URL"] == "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-processing" &&
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["PROCESSING_CONCURRENCY"] == "0" &&
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["PROCESSING_MAX_ATTEMPTS"] == "3" &&
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["PROCESSING_VISIBILITY_TIMEOUT"] == "120"
    )
    error_message = "With the worker service the gateway gets PROCESSING_QUEUE_URL, PROCESSING_CONCURRENCY=0, and the workers' max attempts and visibility timeout (its sweep uses them)."
  }
  # the queues: encrypted, redrive after PROCESSING_MAX_ATTEMPTS, the visibility timeout, retention
  assert {
    condition = (
      aws_sqs_queue.processing[0].sqs_managed_sse_enabled == true && aws_sqs_queue.processing_dead_letter[0].sqs_managed_sse_enabled == true &&
      aws_sqs_queue.processing[0].kms_master_key_id == null
    )
    error_message = "Both queues are encrypted (SSE-SQS without kms_key_arn)."
  }
  assert {
    condition = (
      jsondecode(aws_sqs_queue.processing[0].redrive_policy) == {
        deadLetterTargetArn = "arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-processing-dead-letter"
        maxReceiveCount     = 3
      } &&
      aws_sqs_queue.processing[0].visibility_timeout_seconds == 120 &&
      aws_sqs_queue.processing_dead_letter[0].message_retention_seconds == 1209600
    )
    error_message = "Redrive to the dead-letter queue after 3 receives, visibility timeout 120 s, dead letters kept 14 days."
  }
  assert {
    condition     = jsondecode(aws_sqs_queue_redrive_allow_policy.processing_dead_letter[0].redrive_allow_policy).sourceQueueArns == ["arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-processing"]
    error_message = "Only the processing queue may use the dead-letter queue."
  }
  assert {
    condition = alltrue([for policy in [aws_sqs_queue_policy.processing[0].policy, aws_sqs_queue_policy.processing_dead_letter[0].policy] :
    one(jsondecode(policy).Statement).Effect == "Deny" && one(jsondecode(policy).Statement).Condition.Bool["aws:SecureTransport"] == "false"])
    error_message = "Both queues refuse requests without TLS."
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.dead_letter_messages[0].dimensions.QueueName == "mediaserver-production-processing-dead-letter" &&
      aws_cloudwatch_metric_alarm.dead_letter_messages[0].metric_name == "ApproximateNumberOfMessagesVisible" &&
      aws_cloudwatch_metric_alarm.dead_letter_messages[0].threshold == 0 &&
      aws_cloudwatch_metric_alarm.dead_letter_messages[0].comparison_operator == "GreaterThanThreshold"
    )
    error_message = "One message in the dead-letter queue raises the alarm."
  }
  # least privilege: the gateway may only send; the worker consumes, dead-letters, reads originals, writes thumbnails
  assert {
    condition = (
      [for s in data.aws_iam_policy_document.task.statement : s.actions if anytrue([for a in s.actions : startswith(a, "sqs:")])] == [toset(["sqs:SendMessage"])] &&
      one([for s in data.aws_iam_policy_document.task.statement : s.resources if s.sid == "SendProcessingJobs"]) == toset(["arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-processing"])
    )
    error_message = "The gateway's task role may only SendMessage, to the processing queue."
  }
  assert {
    condition = (
      { for s in data.aws_iam_policy_document.worker[0].statement : s.sid => [s.actions, s.resources] } == {
        ReceiveProcessingJobs = [toset(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]), toset(["arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-processing"])]
        ReadRedrivePolicy     = [toset(["sqs:GetQueueAttributes"]), toset(["arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-processing"])]
        SendToDeadLetterQueue = [toset(["sqs:SendMessage"]), toset(["arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-processing-dead-letter"])]
        ReadOriginals         = [toset(["s3:GetObject"]), toset(["arn:aws:s3:::example-mediaserver-media/media/*"])]
        WriteThumbnails       = [toset(["s3:PutObject"]), toset(["arn:aws:s3:::example-mediaserver-media/media/*_thumb.jpg"])]
      }
    )
    error_message = "The worker's task role: receive/delete/change visibility and read the redrive policy of the queue, send to the dead-letter queue, read originals, write thumbnails; nothing else."
  }
  assert {
    condition     = alltrue([for s in data.aws_iam_policy_document.worker[0].statement : alltrue([for a in s.actions : !strcontains(a, "*")])])
    error_message = "No wildcard action in the worker's role."
  }
  assert {
    condition = one(data.aws_iam_policy_document.worker_execution_secrets[0].statement).resources == toset([
      "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/mongodb-uri",
      "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/jwt-secret",
    ])
    error_message = "The worker's execution role reads only the worker's secrets."
  }
  # scaling on the backlog per running task, from 0 tasks
  assert {
    condition = (
      aws_appautoscaling_target.worker[0].min_capacity == 0 && aws_appautoscaling_target.worker[0].max_capacity == 10 &&
      aws_appautoscaling_target.worker[0].resource_id == "service/mediaserver-production/mediaserver-worker"
    )
    error_message = "Worker tasks scale between 0 and 10."
  }
  assert {
    condition = (
      one(aws_appautoscaling_policy.worker_backlog[0].target_tracking_scaling_policy_configuration).target_value == 20 &&
      one([for m in one(one(aws_appautoscaling_policy.worker_backlog[0].target_tracking_scaling_policy_configuration).customized_metric_specification).metrics : m.expression if m.return_data]) == "IF(tasks > 0, messages / tasks, messages * 21)" &&
      toset([for m in one(one(aws_appautoscaling_policy.worker_backlog[0].target_tracking_scaling_policy_configuration).customized_metric_specification).metrics : one(one(m.metric_stat).metric).metric_name if length(m.metric_stat) > 0]) ==
      toset(["ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible", "RunningTaskCount"])
    )
    error_message = "Target tracking on (visible + in-flight messages) / running tasks, aiming at 20; with no task any message is above the target."
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.worker_operators) == 0 && aws_vpc_security_group_egress_rule.worker_https[0].from_port == 443
    error_message = "Nothing reaches the workers unless operators are named; they reach HTTPS APIs."
  }
}

run "worker_with_kms_and_operators" {
  command = plan

  variables {
    kms_key_arn                 = "arn:aws:kms:eu-west-2:123456789012:key/11111111-1111-1111-1111-111111111111"
    operator_security_group_ids = ["sg-0prometheus00000"]
    worker_min_count            = 1
    worker_max_count            = 4
    processing_max_attempts     = 5
  }

  assert {
    condition = (
      aws_sqs_queue.processing[0].kms_master_key_id == var.kms_key_arn && aws_sqs_queue.processing_dead_letter[0].kms_master_key_id == var.kms_key_arn &&
      jsondecode(aws_sqs_queue.processing[0].redrive_policy).maxReceiveCount == 5
    )
    error_message = "With kms_key_arn both queues use the key; maxReceiveCount follows processing_max_attempts."
  }
  assert {
    condition = (
      { for e in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].environment : e.name => e.value }["PROCESSING_MAX_ATTEMPTS"] == "5" &&
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value }["PROCESSING_MAX_ATTEMPTS"] == "5"
    )
    error_message = "PROCESSING_MAX_ATTEMPTS of the workers and the gateway is the redrive count."
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.worker[0].statement : s.resources if s.sid == "MediaAndQueueKey"]) == toset([var.kms_key_arn])
    error_message = "The worker may use the key of the bucket and the queues."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.worker_operators["sg-0prometheus00000"].from_port == 3001
    error_message = "Operators reach WORKER_PORT."
  }
  assert {
    condition     = aws_appautoscaling_target.worker[0].min_capacity == 1 && aws_appautoscaling_target.worker[0].max_capacity == 4
    error_message = "worker_min_count and worker_max_count bound scaling (the service's desired count is left to scaling once created)."
  }
}

run "worker_disabled" {
  command = plan

  variables {
    worker_enabled = false
  }

  assert {
    condition = (
      length(aws_sqs_queue.processing) == 0 && length(aws_sqs_queue.processing_dead_letter) == 0 &&
      length(aws_ecs_service.worker) == 0 && length(aws_appautoscaling_policy.worker_backlog) == 0 && length(aws_iam_role.worker) == 0
    )
    error_message = "worker_enabled = false: no queue, no worker service."
  }
  assert {
    condition = (
      !contains([for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name], "PROCESSING_QUEUE_URL") &&
      !contains([for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name], "PROCESSING_CONCURRENCY") &&
      !contains([for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name], "PROCESSING_MAX_ATTEMPTS")
    )
    error_message = "Without the worker service the gateway processes in-process (no queue, its default concurrency)."
  }
  assert {
    condition     = !contains([for s in data.aws_iam_policy_document.task.statement : s.sid], "SendProcessingJobs")
    error_message = "Without a queue the gateway's role has no SQS statement."
  }
  assert {
    condition     = output.worker_service_name == null && output.processing_queue_url == null
    error_message = "The worker outputs are null without the worker service."
  }
}

run "worker_min_above_max_refused" {
  command = plan
  variables {
    worker_min_count = 5
    worker_max_count = 2
  }
  expect_failures = [aws_ecs_service.worker]
}

run "dead_letters_kept_longer_than_jobs" {
  command = plan
  variables {
    processing_dead_letter_retention_seconds = 345600
  }
  expect_failures = [aws_sqs_queue.processing_dead_letter]
}

# --- webhooks (hooks.tf) and an external identity provider (identity.tf). After the "dashboard"
# run: its apply gives the bucket an ARN, which the IAM statements compared here contain.

run "hooks_on" {
  command = plan

  variables {
    hook_url         = "https://hooks.example.com/mediaserver"
    hook_events      = ["pre-create", "post-finish", "media-ready"]
    hook_sqs_enabled = true
  }

  assert {
    condition = (
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value if startswith(e.name, "HOOK_") } == {
        HOOK_URL           = "https://hooks.example.com/mediaserver"
        HOOK_EVENTS        = "pre-create,post-finish,media-ready"
        HOOK_SQS_QUEUE_URL = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-hooks"
      }
    )
    error_message = "The gateway gets HOOK_URL, HOOK_EVENTS and the hook queue's URL."
  }
  assert {
    condition = (
      { for s in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].secrets : s.name => s.valueFrom }["HOOK_SECRET"] == "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/hook-secret" &&
      contains(one(data.aws_iam_policy_document.execution_secrets.statement).resources, "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/hook-secret") &&
      !strcontains(aws_ecs_task_definition.gateway.container_definitions, "\"HOOK_SECRET_SSM_PARAMETER\"")
    )
    error_message = "HOOK_SECRET is a task secret, by the ARN of /mediaserver/<environment>/hook-secret, which the execution role may read."
  }
  # the worker writes media-ready/failed events to the outbox for the same sinks; it sends none
  assert {
    condition = (
      { for e in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].environment : e.name => e.value if startswith(e.name, "HOOK_") } ==
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value if startswith(e.name, "HOOK_") } &&
      { for s in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].secrets : s.name => s.valueFrom }["HOOK_SECRET"] == "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/hook-secret" &&
      contains(one(data.aws_iam_policy_document.worker_execution_secrets[0].statement).resources, "arn:aws:ssm:eu-west-2:123456789012:parameter/mediaserver/production/hook-secret")
    )
    error_message = "The worker gets the gateway's HOOK_* environment and HOOK_SECRET (its settings refuse HOOK_URL without it)."
  }
  assert {
    condition     = !contains(flatten([for s in data.aws_iam_policy_document.worker[0].statement : tolist(s.resources)]), "arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-hooks")
    error_message = "The worker's role has nothing on the hook queue (the gateways deliver)."
  }
  assert {
    condition = (
      aws_sqs_queue.hooks[0].name == "mediaserver-production-hooks" &&
      aws_sqs_queue.hooks[0].sqs_managed_sse_enabled == true && aws_sqs_queue.hooks[0].kms_master_key_id == null &&
      aws_sqs_queue.hooks[0].message_retention_seconds == 1209600
    )
    error_message = "The hook queue is encrypted (SSE-SQS without kms_key_arn) and keeps events 14 days."
  }
  assert {
    condition = (
      one(jsondecode(aws_sqs_queue_policy.hooks[0].policy).Statement).Effect == "Deny" &&
      one(jsondecode(aws_sqs_queue_policy.hooks[0].policy).Statement).Condition.Bool["aws:SecureTransport"] == "false"
    )
    error_message = "The hook queue refuses requests without TLS."
  }
  # least privilege: SendMessage on the hook queue, and on the processing queue as before; nothing else of SQS
  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.task.statement : [s.actions, s.resources] if s.sid == "SendHookEvents"]) ==
      [toset(["sqs:SendMessage"]), toset(["arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-hooks"])] &&
      toset(flatten([for s in data.aws_iam_policy_document.task.statement : [for a in s.actions : a if startswith(a, "sqs:")]])) == toset(["sqs:SendMessage"])
    )
    error_message = "The gateway's task role may only SendMessage to the hook queue (and to the processing queue)."
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.hook_queue_oldest_message[0].dimensions.QueueName == "mediaserver-production-hooks" &&
      aws_cloudwatch_metric_alarm.hook_queue_oldest_message[0].metric_name == "ApproximateAgeOfOldestMessage" &&
      aws_cloudwatch_metric_alarm.hook_queue_oldest_message[0].threshold == 86400
    )
    error_message = "An event waiting a day in the hook queue raises the alarm."
  }
  assert {
    condition     = output.hook_queue_url == "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-hooks" && output.hook_queue_arn == "arn:aws:sqs:eu-west-2:123456789012:mediaserver-production-hooks"
    error_message = "The hook queue's URL and ARN are outputs (for the integrator's consumer)."
  }
}

run "hook_queue_only_with_kms" {
  command = plan

  variables {
    hook_sqs_enabled = true
    kms_key_arn      = "arn:aws:kms:eu-west-2:123456789012:key/11111111-1111-1111-1111-111111111111"
  }

  assert {
    condition = (
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value if startswith(e.name, "HOOK_") } ==
      { HOOK_SQS_QUEUE_URL = "https://sqs.eu-west-2.amazonaws.com/123456789012/mediaserver-production-hooks" } &&
      !contains([for s in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].secrets : s.name], "HOOK_SECRET")
    )
    error_message = "The SQS sink alone: HOOK_SQS_QUEUE_URL, no HOOK_URL, no signing secret."
  }
  assert {
    condition     = aws_sqs_queue.hooks[0].kms_master_key_id == var.kms_key_arn && aws_sqs_queue.hooks[0].sqs_managed_sse_enabled != true
    error_message = "With kms_key_arn the hook queue uses the key."
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.task.statement : s.actions if s.sid == "MediaKey"]) == toset(["kms:Decrypt", "kms:GenerateDataKey"])
    error_message = "The gateway may use the key (SendMessage to an SSE-KMS queue needs GenerateDataKey and Decrypt)."
  }
}

run "hook_url_with_own_parameter" {
  command = plan

  variables {
    hook_url                   = "https://hooks.example.com/mediaserver"
    hook_secret_parameter_name = "/integrations/mediaserver-hook-key"
    worker_enabled             = false
  }

  assert {
    condition = (
      { for s in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].secrets : s.name => s.valueFrom }["HOOK_SECRET"] == "arn:aws:ssm:eu-west-2:123456789012:parameter/integrations/mediaserver-hook-key" &&
      !contains([for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name], "HOOK_EVENTS") &&
      !contains([for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name], "HOOK_SQS_QUEUE_URL")
    )
    error_message = "HOOK_SECRET from the named parameter; HOOK_EVENTS left to the gateway's default; no queue unless asked for."
  }
  assert {
    condition     = length(aws_sqs_queue.hooks) == 0 && length([for s in data.aws_iam_policy_document.task.statement : s if anytrue([for a in s.actions : startswith(a, "sqs:")])]) == 0
    error_message = "HTTP hooks alone: no queue, no SQS statement."
  }
}

run "identity_provider" {
  command = plan

  variables {
    jwt_jwks_url    = "https://idp.example.com/realms/media/protocol/openid-connect/certs"
    jwt_issuer      = "https://idp.example.com/realms/media"
    jwt_audience    = "mediaserver-api"
    jwt_role_claim  = "realm_access.roles"
    jwt_admin_roles = ["media-admin", "ops"]
  }

  assert {
    condition = (
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value if startswith(e.name, "JWT_") } == {
        JWT_JWKS_URL    = "https://idp.example.com/realms/media/protocol/openid-connect/certs"
        JWT_ISSUER      = "https://idp.example.com/realms/media"
        JWT_AUDIENCE    = "mediaserver-api"
        JWT_ROLE_CLAIM  = "realm_access.roles"
        JWT_ADMIN_ROLES = "media-admin,ops"
      }
    )
    error_message = "The gateway gets JWT_JWKS_URL, JWT_ISSUER, JWT_AUDIENCE, JWT_ROLE_CLAIM and JWT_ADMIN_ROLES."
  }
  assert {
    condition     = length([for e in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].environment : e.name if startswith(e.name, "JWT_")]) == 0
    error_message = "The worker authenticates nothing: no identity provider settings."
  }
}

run "identity_provider_minimal" {
  command = plan

  variables {
    jwt_jwks_url = "https://tenant.example.auth0.com:443/.well-known/jwks.json"
    jwt_issuer   = "https://tenant.example.auth0.com/"
    jwt_audience = "https://api.example.com/media"
  }

  assert {
    condition = (
      { for e in jsondecode(aws_ecs_task_definition.gateway.container_definitions)[0].environment : e.name => e.value if startswith(e.name, "JWT_") } == {
        JWT_JWKS_URL = "https://tenant.example.auth0.com:443/.well-known/jwks.json"
        JWT_ISSUER   = "https://tenant.example.auth0.com/"
        JWT_AUDIENCE = "https://api.example.com/media"
      }
    )
    error_message = "Role claim and admin roles left to the gateway's defaults when not given (an explicit :443 is accepted)."
  }
}

run "jwks_without_issuer_and_audience_refused" {
  command = plan
  variables {
    jwt_jwks_url = "https://idp.example.com/jwks.json"
  }
  expect_failures = [var.jwt_issuer, var.jwt_audience]
}

run "jwks_over_http_refused" {
  command = plan
  variables {
    jwt_jwks_url = "http://idp.example.com/jwks.json"
    jwt_issuer   = "https://idp.example.com"
    jwt_audience = "mediaserver-api"
  }
  expect_failures = [var.jwt_jwks_url]
}

run "issuer_over_http_refused" {
  command = plan
  variables {
    jwt_jwks_url = "https://idp.example.com/jwks.json"
    jwt_issuer   = "http://idp.example.com"
    jwt_audience = "mediaserver-api"
  }
  expect_failures = [var.jwt_issuer]
}

run "identity_settings_without_jwks_refused" {
  command = plan
  variables {
    jwt_issuer      = "https://idp.example.com"
    jwt_role_claim  = "roles"
    jwt_admin_roles = ["admin"]
  }
  expect_failures = [var.jwt_issuer, var.jwt_role_claim, var.jwt_admin_roles]
}

run "hook_url_over_http_refused" {
  command = plan
  variables {
    hook_url = "http://hooks.example.com/mediaserver"
  }
  expect_failures = [var.hook_url]
}

# the tasks' security group lets HTTPS out on 443 only (network.tf)
run "hook_url_on_another_port_refused" {
  command = plan
  variables {
    hook_url = "https://hooks.example.com:8443/mediaserver"
  }
  expect_failures = [var.hook_url]
}

run "unknown_hook_event_refused" {
  command = plan
  variables {
    hook_url    = "https://hooks.example.com/mediaserver"
    hook_events = ["post-finish", "post-upload"]
  }
  expect_failures = [var.hook_events]
}

run "hook_settings_without_a_sink_refused" {
  command = plan
  variables {
    hook_events                = ["post-finish"]
    hook_secret_parameter_name = "/mediaserver/production/hook-secret"
  }
  expect_failures = [var.hook_events, var.hook_secret_parameter_name]
}

run "hook_alarm_after_events_expire_refused" {
  command = plan
  variables {
    hook_sqs_enabled             = true
    hook_queue_retention_seconds = 3600
  }
  expect_failures = [aws_cloudwatch_metric_alarm.hook_queue_oldest_message]
}
