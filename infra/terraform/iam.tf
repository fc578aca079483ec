# Roles: the execution role pulls the image, writes logs and reads the secrets' parameters (ECS
# injects them at task start); the task role may do only the bucket actions the gateway uses, and
# send to the processing queue and the hook queue. The worker service has roles of its own (below):
# the secrets it reads, the queue actions of a consumer, originals read and thumbnails written.

data "aws_iam_policy_document" "ecs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "mediaserver-${var.environment}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

resource "aws_iam_role_policy_attachment" "execution_managed" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    sid       = "ReadGatewaySecrets"
    actions   = ["ssm:GetParameters"]
    resources = values(local.secret_parameter_arns)
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptGatewaySecrets"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "read-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

resource "aws_iam_role" "task" {
  name               = "mediaserver-${var.environment}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

data "aws_iam_policy_document" "task" {
  statement {
    sid = "MediaObjects"
    actions = [
      "s3:PutObject",
      "s3:GetObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.media.arn}/*"]
  }
  statement {
    sid       = "MediaBucket"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.media.arn]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "MediaKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
  # With the worker service the gateway only hands jobs to the queue (it receives none).
  dynamic "statement" {
    for_each = aws_sqs_queue.processing[*].arn
    content {
      sid       = "SendProcessingJobs"
      actions   = ["sqs:SendMessage"]
      resources = [statement.value]
    }
  }
  # With hook_sqs_enabled the gateways deliver webhook events to the hook queue (hooks.tf); only send.
  dynamic "statement" {
    for_each = aws_sqs_queue.hooks[*].arn
    content {
      sid       = "SendHookEvents"
      actions   = ["sqs:SendMessage"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "media-bucket"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# --- the worker service (worker.tf)

resource "aws_iam_role" "worker_execution" {
  count              = local.worker_count
  name               = "mediaserver-${var.environment}-worker-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

resource "aws_iam_role_policy_attachment" "worker_execution_managed" {
  count      = local.worker_count
  role       = aws_iam_role.worker_execution[0].name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "worker_execution_secrets" {
  count = local.worker_count
  statement {
    sid       = "ReadWorkerSecrets"
    actions   = ["ssm:GetParameters"]
    resources = values(local.worker_secret_parameter_arns)
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptWorkerSecrets"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "worker_execution_secrets" {
  count  = local.worker_count
  name   = "read-secrets"
  role   = aws_iam_role.worker_execution[0].id
  policy = data.aws_iam_policy_document.worker_execution_secrets[0].json
}

resource "aws_iam_role" "worker" {
  count              = local.worker_count
  name               = "mediaserver-${var.environment}-worker"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

data "aws_iam_policy_document" "worker" {
  count = local.worker_count
  statement {
    sid       = "ReceiveProcessingJobs"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    resources = aws_sqs_queue.processing[*].arn
  }
  # The worker asks the queue for its RedrivePolicy once (processing/queue.py): with one, SQS moves
  # a job out of attempts to the dead-letter queue itself; without, the worker sends it there.
  statement {
    sid       = "ReadRedrivePolicy"
    actions   = ["sqs:GetQueueAttributes"]
    resources = aws_sqs_queue.processing[*].arn
  }
  statement {
    sid       = "SendToDeadLetterQueue"
    actions   = ["sqs:SendMessage"]
    resources = aws_sqs_queue.processing_dead_letter[*].arn
  }
  # Originals are stored under media/<category>/<id>.<ext> (processing/detect.py), thumbnails next to
  # them as media/<category>/<id>_thumb.jpg (processing/jobs.py). Reading covers the presigned URL
  # ffmpeg reads videos through.
  statement {
    sid       = "ReadOriginals"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.media.arn}/media/*"]
  }
  statement {
    sid       = "WriteThumbnails"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.media.arn}/media/*_thumb.jpg"]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "MediaAndQueueKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "worker" {
  count  = local.worker_count
  name   = "process-media"
  role   = aws_iam_role.worker[0].id
  policy = data.aws_iam_policy_document.worker[0].json
}
