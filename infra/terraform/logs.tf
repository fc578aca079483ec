# Logs (JSON lines with Embedded Metric Format records), alarms and where they go.

resource "aws_cloudwatch_log_group" "gateway" {
  #checkov:skip=CKV_AWS_338:Retention is 30 days by design (request logs with user ids); long-term audit lives in CloudTrail.
  name              = "/mediaserver/${var.environment}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

# Alarms go to alarm_topic_arn when given (an existing team topic), else to a topic made here.
locals {
  create_alarm_topic = var.alarm_topic_arn == ""
  alarm_topic_arn    = local.create_alarm_topic ? aws_sns_topic.alarms[0].arn : var.alarm_topic_arn
  alarm_prefix       = "mediaserver-${var.environment}"
}

# CloudWatch cannot publish to a topic encrypted with the AWS-managed key (alias/aws/sns): its key
# policy cannot grant the CloudWatch service. Without kms_key_arn the topic gets a small key of its
# own whose policy allows CloudWatch alarms of this account (and this stack's alarm names) to use it.
# A kms_key_arn given instead must allow cloudwatch.amazonaws.com kms:Decrypt and kms:GenerateDataKey*.
resource "aws_kms_key" "alarms" {
  count                   = local.create_alarm_topic && var.kms_key_arn == null ? 1 : 0
  description             = "MediaServer ${var.environment} alarm topic"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchAlarmsPublish"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
        Condition = {
          StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id }
          ArnLike      = { "aws:SourceArn" = "arn:${data.aws_partition.current.partition}:cloudwatch:${var.region}:${data.aws_caller_identity.current.account_id}:alarm:${local.alarm_prefix}-*" }
        }
      },
    ]
  })
}

resource "aws_sns_topic" "alarms" {
  count             = local.create_alarm_topic ? 1 : 0
  name              = "${local.alarm_prefix}-alarms"
  kms_master_key_id = var.kms_key_arn == null ? aws_kms_key.alarms[0].arn : var.kms_key_arn
}

moved {
  from = aws_sns_topic.alarms
  to   = aws_sns_topic.alarms[0]
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count     = local.create_alarm_topic && var.alarm_email != "" ? 1 : 0
  topic_arn = aws_sns_topic.alarms[0].arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_cloudwatch_metric_alarm" "cpu_high" {
  alarm_name          = "${local.alarm_prefix}-cpu-high"
  alarm_description   = "Gateway tasks use more than 85% CPU."
  namespace           = "AWS/ECS"
  metric_name         = "CPUUtilization"
  dimensions          = { ClusterName = aws_ecs_cluster.main.name, ServiceName = aws_ecs_service.gateway.name }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 5
  threshold           = 85
  comparison_operator = "GreaterThanThreshold"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "memory_high" {
  alarm_name          = "${local.alarm_prefix}-memory-high"
  alarm_description   = "Gateway tasks use more than 85% of their memory."
  namespace           = "AWS/ECS"
  metric_name         = "MemoryUtilization"
  dimensions          = { ClusterName = aws_ecs_cluster.main.name, ServiceName = aws_ecs_service.gateway.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 85
  comparison_operator = "GreaterThanThreshold"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "http_5xx_rate" {
  alarm_name          = "${local.alarm_prefix}-5xx-rate"
  alarm_description   = "More than 5% of requests answered with 5xx by the targets."
  comparison_operator = "GreaterThanThreshold"
  evaluation_periods  = 3
  threshold           = 5
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]

  metric_query {
    id          = "rate"
    expression  = "100 * errors / MAX([requests, 1])"
    label       = "5xx percent"
    return_data = true
  }
  metric_query {
    id = "errors"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = { LoadBalancer = aws_lb.main.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }
  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      dimensions  = { LoadBalancer = aws_lb.main.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }
}

# 5xx the load balancer answers itself (502/503/504: no healthy target, a target that closed the
# connection, a timeout); none of them reach the gateway's logs.
resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  alarm_name          = "${local.alarm_prefix}-alb-5xx"
  alarm_description   = "The load balancer itself answered more than ${var.alarm_alb_5xx_per_minute} 5xx a minute, in 3 of 5 minutes."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_ELB_5XX_Count"
  dimensions          = { LoadBalancer = aws_lb.main.arn_suffix }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.alarm_alb_5xx_per_minute
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_hosts" {
  alarm_name          = "${local.alarm_prefix}-unhealthy-hosts"
  alarm_description   = "At least one gateway task has failed the load balancer's /health check for 3 minutes."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.main.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "no_healthy_hosts" {
  alarm_name          = "${local.alarm_prefix}-no-healthy-hosts"
  alarm_description   = "No gateway task passes the load balancer's /health check: the service is down."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.main.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

# p99 of the time from the load balancer sending a request to the gateway's first response byte.
# An upload PATCH that streams a large body counts too, so the threshold is well above what API
# calls take; raise it when clients send whole files in one PATCH (tus without a chunk size).
resource "aws_cloudwatch_metric_alarm" "latency_p99" {
  alarm_name          = "${local.alarm_prefix}-latency-p99"
  alarm_description   = "p99 target response time above ${var.alarm_latency_p99_seconds} s for 15 minutes."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = { LoadBalancer = aws_lb.main.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
  extended_statistic  = "p99"
  period              = 300
  evaluation_periods  = 3
  threshold           = var.alarm_latency_p99_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}
