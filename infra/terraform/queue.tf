# Processing jobs through SQS (when worker_enabled): the gateway sends one message per completed
# upload, the worker service (worker.tf) receives it. MongoDB stays the record of each job's status
# and attempts; the queue only delivers. After processing_max_attempts deliveries SQS moves the
# message to the dead-letter queue (redrive maxReceiveCount) and the worker marks the media failed.
# Both queues are encrypted: SSE-SQS, or SSE-KMS with kms_key_arn (the tasks' roles may use the key).

locals {
  queue_count = var.worker_enabled ? 1 : 0
  queue_name  = "mediaserver-${var.environment}-processing"
}

resource "aws_sqs_queue" "processing_dead_letter" {
  count                     = local.queue_count
  name                      = "${local.queue_name}-dead-letter"
  message_retention_seconds = var.processing_dead_letter_retention_seconds
  sqs_managed_sse_enabled   = var.kms_key_arn == null ? true : null
  kms_master_key_id         = var.kms_key_arn

  lifecycle {
    precondition {
      condition     = var.processing_dead_letter_retention_seconds > var.processing_queue_retention_seconds
      error_message = "The dead-letter queue must keep messages longer than the processing queue (a moved message keeps its first enqueue time)."
    }
  }
}

resource "aws_sqs_queue" "processing" {
  count = local.queue_count
  name  = local.queue_name
  # PROCESSING_VISIBILITY_TIMEOUT of the worker is the same variable (worker.tf).
  visibility_timeout_seconds = var.processing_visibility_timeout
  message_retention_seconds  = var.processing_queue_retention_seconds
  receive_wait_time_seconds  = 20 # long polling: idle workers make few requests
  sqs_managed_sse_enabled    = var.kms_key_arn == null ? true : null
  kms_master_key_id          = var.kms_key_arn
  # KMS data keys cached 5 minutes: fewer kms calls per message
  kms_data_key_reuse_period_seconds = var.kms_key_arn == null ? null : 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.processing_dead_letter[0].arn
    maxReceiveCount     = var.processing_max_attempts
  })
}

# Only the processing queue may use the dead-letter queue as its dead-letter queue.
resource "aws_sqs_queue_redrive_allow_policy" "processing_dead_letter" {
  count     = local.queue_count
  queue_url = aws_sqs_queue.processing_dead_letter[0].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.processing[0].arn]
  })
}

# TLS only, as for the bucket (s3.tf); who may send and receive is said by the tasks' roles (iam.tf).
resource "aws_sqs_queue_policy" "processing" {
  count     = local.queue_count
  queue_url = aws_sqs_queue.processing[0].id
  policy    = local.queue_tls_only_policy[0]
}

resource "aws_sqs_queue_policy" "processing_dead_letter" {
  count     = local.queue_count
  queue_url = aws_sqs_queue.processing_dead_letter[0].id
  policy    = local.queue_tls_only_policy[1]
}

locals {
  queue_tls_only_policy = [
    for arn in concat(aws_sqs_queue.processing[*].arn, aws_sqs_queue.processing_dead_letter[*].arn) : jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "sqs:*"
        Resource  = arn
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      }]
    })
  ]
}

# A job in the dead-letter queue is media marked failed after processing_max_attempts: one is
# worth a look (a poison file, a broken ffmpeg, a permission). Redrive or delete it once understood.
resource "aws_cloudwatch_metric_alarm" "dead_letter_messages" {
  count               = local.queue_count
  alarm_name          = "${local.alarm_prefix}-processing-dead-letter"
  alarm_description   = "Processing jobs reached the dead-letter queue after ${var.processing_max_attempts} attempts (their media are marked failed)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.processing_dead_letter[0].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}

# Jobs waiting too long: the workers are at worker_max_count, or none can start (image, Spot and
# on-demand capacity, a crash loop).
resource "aws_cloudwatch_metric_alarm" "queue_oldest_message" {
  count               = local.queue_count
  alarm_name          = "${local.alarm_prefix}-processing-backlog-age"
  alarm_description   = "The oldest processing job has waited more than ${var.alarm_queue_oldest_message_seconds} s."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.processing[0].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.alarm_queue_oldest_message_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [local.alarm_topic_arn]
  ok_actions          = [local.alarm_topic_arn]
}
