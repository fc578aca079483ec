# Webhooks (README "Webhooks"), off by default: with hook_url the gateway POSTs signed events to the
# integrator's endpoint (the HMAC key HOOK_SECRET is an SSM parameter, ssm.tf); with
# hook_sqs_enabled it also sends them to an encrypted SQS queue made here, which integrators consume
# with their own IAM permissions. The gateways deliver from the outbox in MongoDB, which retries and
# keeps dead events itself, so the queue needs no dead-letter queue of its own.
#
# The worker gets the same HOOK_* names (worker.tf): its media-ready and media-failed events go into
# the outbox with one row per sink, for the gateways to deliver. It sends nothing itself, so its
# role has no statement for the hook queue.

locals {
  hook_queue_count = var.hook_sqs_enabled ? 1 : 0

  # HOOK_* environment of the gateway and the worker alike (empty with hooks off)
  hook_environment = merge(
    var.hook_url == "" ? {} : { HOOK_URL = var.hook_url },
    var.hook_sqs_enabled ? { HOOK_SQS_QUEUE_URL = aws_sqs_queue.hooks[0].url } : {},
    var.hook_events == null ? {} : { HOOK_EVENTS = join(",", var.hook_events) },
  )
}

resource "aws_sqs_queue" "hooks" {
  count                     = local.hook_queue_count
  name                      = "mediaserver-${var.environment}-hooks"
  message_retention_seconds = var.hook_queue_retention_seconds
  receive_wait_time_seconds = 20 # long polling for the consumers
  sqs_managed_sse_enabled   = var.kms_key_arn == null ? true : null
  kms_master_key_id         = var.kms_key_arn
  # KMS data keys cached 5 minutes: fewer kms calls per event
  kms_data_key_reuse_period_seconds = var.kms_key_arn == null ? null : 300
}

# TLS only, as for the processing queues (queue.tf); the gateway's role may only send (iam.tf).
resource "aws_sqs_queue_policy" "hooks" {
  count     = local.hook_queue_count
  queue_url = aws_sqs_queue.hooks[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "sqs:*"
      Resource  = aws_sqs_queue.hooks[0].arn
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
}

# Events waiting too long: the integrator's consumer has stopped, and events older than
# hook_queue_retention_seconds are lost.
resource "aws_cloudwatch_metric_alarm" "hook_queue_oldest_message" {
  count               = local.hook_queue_count
  alarm_name          = "${local.alarm_prefix}-hook-queue-age"
  alarm_description   = "The oldest webhook event in the hook queue has waited more than ${var.alarm_hook_queue_oldest_message_seconds} s (events expire after ${var.hook_queue_retention_seconds} s)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.hooks[0].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.alarm_hook_queue_oldest_message_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]

  lifecycle {
    precondition {
      condition     = var.alarm_hook_queue_oldest_message_seconds < var.hook_queue_retention_seconds
      error_message = "alarm_hook_queue_oldest_message_seconds must be shorter than hook_queue_retention_seconds (the alarm must come before events expire)."
    }
  }
}
