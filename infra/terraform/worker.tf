# The worker service (when worker_enabled): the gateway's image running `mediaserver worker`, which
# only processes media from the queue (queue.tf). No load balancer and no public port: /health and
# /metrics on WORKER_PORT, for the container health check and for operator_security_group_ids.
# Tasks run mostly on Fargate Spot (jobs are retried: a reclaimed task's message becomes visible
# again after the visibility timeout), with on-demand Fargate for the base and a weighted share.
# Scaling follows the queue's backlog per running task.

locals {
  worker_count = var.worker_enabled ? 1 : 0
  # The secrets a worker reads: MongoDB's URI, the metrics token (its /metrics honours it), and the
  # JWT secret, which it does not use with S3 (presigned URLs) but without which ENVIRONMENT=production
  # refuses to start (gateway/config.py). Drop JWT_SECRET here once the worker no longer asks for it.
  # HOOK_SECRET likewise: the worker signs nothing (the gateways deliver its events), but with
  # HOOK_URL set the settings refuse to load without it.
  worker_secret_names = ["MONGODB_URI", "METRICS_TOKEN", "JWT_SECRET", "HOOK_SECRET"]
  worker_secret_parameter_arns = {
    for env_name, arn in local.secret_parameter_arns : env_name => arn if contains(local.worker_secret_names, env_name)
  }
  # Backlog per task as scaling sees it. With no task running, any waiting message counts as more
  # than the target, so the first message starts a task even when worker_min_count is 0 (target
  # tracking scales out from zero capacity by one task when the metric is above the target).
  worker_backlog_expression = "IF(tasks > 0, messages / tasks, messages * ${var.worker_backlog_per_task + 1})"
}

resource "aws_ecs_cluster_capacity_providers" "main" {
  cluster_name       = aws_ecs_cluster.main.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]
  # No default strategy: the gateway service names its launch type (on-demand FARGATE), the
  # worker service its own strategy.
}

resource "aws_ecs_task_definition" "worker" {
  count                    = local.worker_count
  family                   = "mediaserver-${var.environment}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_task_cpu
  memory                   = var.worker_task_memory
  execution_role_arn       = aws_iam_role.worker_execution[0].arn
  task_role_arn            = aws_iam_role.worker[0].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([{
    name                   = "worker"
    image                  = var.image
    command                = ["mediaserver", "worker"]
    essential              = true
    readonlyRootFilesystem = true
    user                   = "1001:1001"
    portMappings = [
      { name = "worker", containerPort = var.worker_port, protocol = "tcp" },
    ]
    # Spot reclaims and scale-in send SIGTERM; the worker stops receiving and ends its jobs within
    # SHUTDOWN_TIMEOUT (90 s) before the SIGKILL at stopTimeout (120 s). A job cut short is
    # delivered again once its visibility timeout ends.
    stopTimeout = local.container_stop_timeout
    environment = concat([
      { name = "HOST", value = "0.0.0.0" },
      { name = "ENVIRONMENT", value = "production" },
      { name = "STORAGE_BACKEND", value = "s3" },
      { name = "S3_BUCKET", value = aws_s3_bucket.media.bucket },
      { name = "S3_SSE", value = "" },
      { name = "AWS_REGION", value = var.region },
      { name = "SHUTDOWN_TIMEOUT", value = tostring(local.gateway_shutdown_timeout) },
      { name = "EMF_NAMESPACE", value = var.emf_namespace },
      { name = "LOG_FORMAT", value = "json" },
      { name = "DATA_DIR", value = "/tmp/mediaserver" },
      { name = "WORKER_PORT", value = tostring(var.worker_port) },
      { name = "PROCESSING_CONCURRENCY", value = tostring(var.worker_processing_concurrency) },
      # Memory the jobs of a task may hold at once: half the task (the default, 128 MiB, is sized
      # for the gateway's 512 MiB task); the rest is the process, S3 reads and the image workers.
      { name = "PROCESSING_MEMORY_BUDGET", value = "${floor(var.worker_task_memory / 2)}MiB" },
      { name = "PROCESSING_QUEUE_URL", value = aws_sqs_queue.processing[0].url },
      { name = "PROCESSING_DEAD_LETTER_QUEUE_URL", value = aws_sqs_queue.processing_dead_letter[0].url },
      # The same variables set the queue's redrive maxReceiveCount and visibility timeout (queue.tf).
      { name = "PROCESSING_MAX_ATTEMPTS", value = tostring(var.processing_max_attempts) },
      { name = "PROCESSING_VISIBILITY_TIMEOUT", value = tostring(var.processing_visibility_timeout) },
      ],
      # The gateway's HOOK_* names (hooks.tf): media-ready and media-failed events of the jobs done
      # here go into the outbox for the same sinks, and the gateways deliver them.
      [for name, value in local.hook_environment : { name = name, value = value }],
    )
    secrets = [
      for env_name, arn in local.worker_secret_parameter_arns : { name = env_name, valueFrom = arn }
    ]
    mountPoints = [{ sourceVolume = "scratch", containerPath = "/tmp", readOnly = false }]
    # Replaces the image's HEALTHCHECK, which asks the gateway's PORT. With no load balancer, ECS
    # replaces a task whose container stays unhealthy.
    healthCheck = {
      command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${var.worker_port}/health', timeout=4)"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.gateway.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "worker"
      }
    }
  }])

  volume {
    name = "scratch"
  }

  lifecycle {
    precondition {
      condition     = var.worker_port != var.container_port && var.worker_port != var.metrics_port
      error_message = "WORKER_PORT must differ from the gateway's port and METRICS_PORT."
    }
  }
}

resource "aws_ecs_service" "worker" {
  count                  = local.worker_count
  name                   = "mediaserver-worker"
  cluster                = aws_ecs_cluster.main.id
  task_definition        = aws_ecs_task_definition.worker[0].arn
  desired_count          = var.worker_min_count
  propagate_tags         = "SERVICE"
  enable_execute_command = false

  # Spot first, on-demand as the base and a weighted share: ECS does not move tasks to on-demand
  # when Spot capacity runs short, so the on-demand share keeps jobs moving meanwhile.
  capacity_provider_strategy {
    capacity_provider = "FARGATE"
    base              = var.worker_on_demand_base
    weight            = var.worker_on_demand_weight
  }
  capacity_provider_strategy {
    capacity_provider = "FARGATE_SPOT"
    weight            = var.worker_spot_weight
  }

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.worker[0].id]
    assign_public_ip = false
  }

  lifecycle {
    ignore_changes = [desired_count]
    precondition {
      condition     = var.worker_min_count <= var.worker_max_count
      error_message = "worker_min_count must not exceed worker_max_count."
    }
  }

  depends_on = [aws_ecs_cluster_capacity_providers.main]
}

resource "aws_appautoscaling_target" "worker" {
  count              = local.worker_count
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.worker[0].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.worker_min_count
  max_capacity       = var.worker_max_count
}

# Target tracking on the backlog per running task: jobs in the queue (AWS/SQS
# ApproximateNumberOfMessagesVisible, plus NotVisible: jobs being processed, so a drained queue does
# not scale in tasks in the middle of their last jobs) over ECS/ContainerInsights RunningTaskCount
# (the cluster has Container Insights on). More tasks when it rises above worker_backlog_per_task,
# fewer (down to worker_min_count) when it falls. Missing data points count as 0 (an idle queue
# stops publishing metrics).
resource "aws_appautoscaling_policy" "worker_backlog" {
  count              = local.worker_count
  name               = "mediaserver-worker-backlog"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker[0].service_namespace
  resource_id        = aws_appautoscaling_target.worker[0].resource_id
  scalable_dimension = aws_appautoscaling_target.worker[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.worker_backlog_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    customized_metric_specification {
      metrics {
        id          = "visible"
        label       = "messages waiting"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = aws_sqs_queue.processing[0].name
            }
          }
        }
      }
      metrics {
        id          = "in_flight"
        label       = "messages being processed"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesNotVisible"
            dimensions {
              name  = "QueueName"
              value = aws_sqs_queue.processing[0].name
            }
          }
        }
      }
      metrics {
        id          = "running"
        label       = "worker tasks running"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.main.name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.worker[0].name
            }
          }
        }
      }
      metrics {
        id          = "messages"
        expression  = "FILL(visible, 0) + FILL(in_flight, 0)"
        return_data = false
      }
      metrics {
        id          = "tasks"
        expression  = "FILL(running, 0)"
        return_data = false
      }
      metrics {
        id          = "backlog"
        label       = "messages waiting per worker task"
        expression  = local.worker_backlog_expression
        return_data = true
      }
    }
  }
}
