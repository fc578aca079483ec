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
    condition     = length(jsondecode(aws_cloudwatch_dashboard.gateway.dashboard_body).widgets) == 8
    error_message = "Eight widgets."
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
