# ECS on Fargate: 256 CPU / 512 MB tasks, 2 to 10 of them, rolling deploys with automatic rollback.

resource "aws_ecs_cluster" "main" {
  name = "mediaserver-${var.environment}"
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_task_definition" "gateway" {
  family                   = "mediaserver-${var.environment}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([{
    name                   = "gateway"
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    user                   = "1001:1001"
    # Only container_port is a load balancer target; METRICS_PORT is reachable from
    # operator_security_group_ids alone (network.tf), never through the ALB.
    portMappings = [
      { name = "http", containerPort = var.container_port, protocol = "tcp" },
      { name = "metrics", containerPort = var.metrics_port, protocol = "tcp" },
    ]
    # SIGKILL this long after SIGTERM (Fargate's maximum, 120 s); SHUTDOWN_TIMEOUT below is shorter.
    stopTimeout = local.container_stop_timeout
    environment = concat([
      { name = "HOST", value = "0.0.0.0" },
      { name = "PORT", value = tostring(var.container_port) },
      # The gateway's mode, not this deployment's name: production refuses the embedded MongoDB
      # and a generated JWT secret (staging runs in production mode too).
      { name = "ENVIRONMENT", value = "production" },
      { name = "STORAGE_BACKEND", value = "s3" },
      { name = "S3_BUCKET", value = aws_s3_bucket.media.bucket },
      # Empty: no per-object SSE header; the bucket's default encryption (s3.tf) applies.
      { name = "S3_SSE", value = "" },
      { name = "AWS_REGION", value = var.region },
      # Proxies that append to X-Forwarded-For: CloudFront and the ALB, or the ALB alone. With
      # CloudFront the ALB admits only CloudFront's origin-facing addresses (network.tf), so the
      # second-to-last entry really is the one CloudFront saw.
      { name = "TRUSTED_PROXY_HOPS", value = var.enable_cloudfront ? "2" : "1" },
      # Keep-alive: 120 s, longer than the ALB's idle_timeout (60 s), so the ALB closes idle
      # connections first and never sends a request on one the gateway is closing (timeouts.tf).
      { name = "IDLE_CONNECTION_TIMEOUT", value = tostring(local.gateway_idle_connection_timeout) },
      # Drain after SIGTERM: 90 s, below stopTimeout (120 s), so requests in flight end at a durable
      # point before the SIGKILL (timeouts.tf).
      { name = "SHUTDOWN_TIMEOUT", value = tostring(local.gateway_shutdown_timeout) },
      # /metrics on this port only (not on PORT, which the ALB routes).
      { name = "METRICS_PORT", value = tostring(var.metrics_port) },
      { name = "EMF_NAMESPACE", value = var.emf_namespace },
      { name = "LOG_FORMAT", value = "json" },
      { name = "DATA_DIR", value = "/tmp/mediaserver" },
      { name = "UPLOAD_MEMORY_BUDGET", value = "160MiB" },
      # Pace upload bodies to 90% of the task's CPU, so the kernel's quota never stops the process
      # and a resuming client's HEAD is answered in milliseconds, not after quota periods of 75 ms
      # (the task's own limit is not visible from inside the container, so it is given here).
      { name = "INGEST_CPU_LIMIT", value = format("%.3f", var.task_cpu / 1024 * 0.9) },
      ],
      # With the worker service (worker.tf) the gateway sends each job to the queue and processes
      # none itself: thumbnails no longer compete with ingest for this task's CPU and memory. Its
      # sweep sends jobs again and fails those out of attempts by the same two numbers the workers
      # and the queue use.
      var.worker_enabled ? [
        { name = "PROCESSING_QUEUE_URL", value = aws_sqs_queue.processing[0].url },
        { name = "PROCESSING_CONCURRENCY", value = "0" },
        { name = "PROCESSING_MAX_ATTEMPTS", value = tostring(var.processing_max_attempts) },
        { name = "PROCESSING_VISIBILITY_TIMEOUT", value = tostring(var.processing_visibility_timeout) },
      ] : [],
      # Webhooks (hooks.tf; HOOK_SECRET is among the secrets) and an external identity provider
      # (identity.tf), when turned on.
      [for name, value in local.hook_environment : { name = name, value = value }],
      [for name, value in local.identity_environment : { name = name, value = value }],
    )
    # SSM parameters created outside Terraform (ssm.tf); only their ARNs are here.
    secrets = [
      for env_name, arn in local.secret_parameter_arns : { name = env_name, valueFrom = arn }
    ]
    mountPoints = [{ sourceVolume = "scratch", containerPath = "/tmp", readOnly = false }]
    healthCheck = {
      command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${var.container_port}/health', timeout=4)"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 20
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.gateway.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "gateway"
      }
    }
  }])

  volume {
    name = "scratch"
  }

  lifecycle {
    precondition {
      condition     = local.gateway_shutdown_timeout < local.container_stop_timeout && local.container_stop_timeout <= 120
      error_message = "SHUTDOWN_TIMEOUT must be shorter than stopTimeout, and stopTimeout at most 120 s (Fargate's maximum)."
    }
    precondition {
      condition     = var.metrics_port != var.container_port
      error_message = "METRICS_PORT must differ from the routed container port, or /metrics would be public."
    }
  }
}

resource "aws_ecs_service" "gateway" {
  name                              = "mediaserver"
  cluster                           = aws_ecs_cluster.main.id
  task_definition                   = aws_ecs_task_definition.gateway.arn
  desired_count                     = var.desired_count
  launch_type                       = "FARGATE"
  health_check_grace_period_seconds = 30
  propagate_tags                    = "SERVICE"
  enable_execute_command            = false

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.gateway.arn
    container_name   = "gateway"
    container_port   = var.container_port
  }

  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https]
}

resource "aws_appautoscaling_target" "gateway" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.gateway.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "mediaserver-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.gateway.service_namespace
  resource_id        = aws_appautoscaling_target.gateway.resource_id
  scalable_dimension = aws_appautoscaling_target.gateway.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = 70
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "memory" {
  name               = "mediaserver-memory"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.gateway.service_namespace
  resource_id        = aws_appautoscaling_target.gateway.resource_id
  scalable_dimension = aws_appautoscaling_target.gateway.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = 75
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageMemoryUtilization"
    }
  }
}
