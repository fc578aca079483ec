# One dashboard per environment. The gateway's own numbers come from the Embedded Metric Format
# records in its logs (namespace EMF_NAMESPACE; UploadBytes and UploadsCompleted by Service,
# RequestLatency and ServerErrors by Service and Route), the rest from AWS/ApplicationELB and
# AWS/ECS. Uploads in progress and the processing backlog have no EMF metric (the gateway exports
# them on /metrics only), so those two widgets query the JSON logs with Logs Insights (the workers
# log to the same group). With the worker service, a ninth widget shows the processing queue.

locals {
  alb_dimensions    = ["LoadBalancer", aws_lb.main.arn_suffix]
  target_dimensions = ["TargetGroup", aws_lb_target_group.gateway.arn_suffix, "LoadBalancer", aws_lb.main.arn_suffix]
  ecs_dimensions    = ["ClusterName", aws_ecs_cluster.main.name, "ServiceName", aws_ecs_service.gateway.name]
  log_source        = "SOURCE '${aws_cloudwatch_log_group.gateway.name}'"

  dashboard_widgets = concat([
    {
      type = "metric", x = 0, y = 0, width = 12, height = 6
      properties = {
        title  = "Ingest: bytes and uploads completed (gateway EMF)"
        region = var.region, view = "timeSeries", period = 60
        metrics = [
          [var.emf_namespace, "UploadBytes", "Service", "mediaserver", { stat = "Sum", label = "bytes uploaded" }],
          [var.emf_namespace, "UploadsCompleted", "Service", "mediaserver", { stat = "Sum", label = "uploads completed", yAxis = "right" }],
        ]
      }
    },
    {
      type = "log", x = 12, y = 0, width = 12, height = 6
      properties = {
        title  = "Uploads in progress: distinct uploads with a PATCH finished per minute (access log)"
        region = var.region, view = "timeSeries"
        query  = "${local.log_source} | filter message = \"request\" and route = \"/files/{id}\" and method = \"PATCH\" | stats count_distinct(path) as uploads_receiving by bin(1m)"
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 12, height = 6
      properties = {
        title  = "Responses: 4xx and 5xx"
        region = var.region, view = "timeSeries", period = 60, stat = "Sum"
        metrics = [
          concat(["AWS/ApplicationELB", "HTTPCode_Target_4XX_Count"], local.target_dimensions, [{ label = "4xx from the gateway" }]),
          concat(["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"], local.target_dimensions, [{ label = "5xx from the gateway" }]),
          concat(["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"], local.alb_dimensions, [{ label = "5xx from the load balancer" }]),
          [{ expression = "SUM(SEARCH('{\"${var.emf_namespace}\",Route,Service} MetricName=\"ServerErrors\"', 'Sum', 60))", label = "5xx logged by the gateway (EMF)", id = "emf5xx" }],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 6, width = 12, height = 6
      properties = {
        title  = "Latency p99 (load balancer, seconds) and per route (gateway EMF, ms)"
        region = var.region, view = "timeSeries", period = 300
        metrics = [
          concat(["AWS/ApplicationELB", "TargetResponseTime"], local.target_dimensions, [{ stat = "p99", label = "target p99 (s)" }]),
          concat(["AWS/ApplicationELB", "TargetResponseTime"], local.target_dimensions, [{ stat = "p50", label = "target p50 (s)" }]),
          [{ expression = "SEARCH('{\"${var.emf_namespace}\",Route,Service} MetricName=\"RequestLatency\"', 'p99', 300)", label = "p99 ms", id = "emfp99", yAxis = "right" }],
        ]
      }
    },
    {
      type = "log", x = 0, y = 12, width = 12, height = 6
      properties = {
        title  = "Processing backlog: uploads completed vs media processed per 5 minutes (a widening gap is a backlog)"
        region = var.region, view = "timeSeries"
        query  = "${local.log_source} | filter message in [\"upload completed\", \"media processed\", \"processing jobs resumed\"] | stats sum(strcontains(message, \"upload completed\")) as uploads_completed, sum(strcontains(message, \"media processed\")) as media_processed, sum(`count`) as jobs_resumed_by_sweeps by bin(5m)"
      }
    },
    {
      type = "metric", x = 12, y = 12, width = 12, height = 6
      properties = {
        title  = "Tasks: CPU and memory (%), running tasks"
        region = var.region, view = "timeSeries", period = 60
        metrics = [
          concat(["AWS/ECS", "CPUUtilization"], local.ecs_dimensions, [{ stat = "Average", label = "CPU average" }]),
          concat(["AWS/ECS", "CPUUtilization"], local.ecs_dimensions, [{ stat = "Maximum", label = "CPU max" }]),
          concat(["AWS/ECS", "MemoryUtilization"], local.ecs_dimensions, [{ stat = "Average", label = "memory average" }]),
          concat(["AWS/ECS", "MemoryUtilization"], local.ecs_dimensions, [{ stat = "Maximum", label = "memory max" }]),
          concat(["ECS/ContainerInsights", "RunningTaskCount"], local.ecs_dimensions, [{ stat = "Average", label = "running tasks", yAxis = "right" }]),
        ]
      }
    },
    {
      type = "metric", x = 0, y = 18, width = 12, height = 6
      properties = {
        title  = "Targets: healthy and unhealthy"
        region = var.region, view = "timeSeries", period = 60
        metrics = [
          concat(["AWS/ApplicationELB", "HealthyHostCount"], local.target_dimensions, [{ stat = "Minimum", label = "healthy" }]),
          concat(["AWS/ApplicationELB", "UnHealthyHostCount"], local.target_dimensions, [{ stat = "Maximum", label = "unhealthy" }]),
        ]
      }
    },
    {
      type = "alarm", x = 12, y = 18, width = 12, height = 6
      properties = {
        title = "Alarms"
        alarms = concat([
          aws_cloudwatch_metric_alarm.alb_5xx.arn,
          aws_cloudwatch_metric_alarm.http_5xx_rate.arn,
          aws_cloudwatch_metric_alarm.unhealthy_hosts.arn,
          aws_cloudwatch_metric_alarm.no_healthy_hosts.arn,
          aws_cloudwatch_metric_alarm.latency_p99.arn,
          aws_cloudwatch_metric_alarm.cpu_high.arn,
          aws_cloudwatch_metric_alarm.memory_high.arn,
          ],
          aws_cloudwatch_metric_alarm.dead_letter_messages[*].arn,
          aws_cloudwatch_metric_alarm.queue_oldest_message[*].arn,
          aws_cloudwatch_metric_alarm.hook_queue_oldest_message[*].arn,
        )
      }
    },
  ], local.queue_widgets)

  # With the worker service: the processing queue (jobs waiting and being processed, the
  # dead-letter queue) against the worker tasks running, which scaling follows.
  queue_widgets = [
    for queue in aws_sqs_queue.processing[*].name : {
      type = "metric", x = 0, y = 24, width = 24, height = 6
      properties = {
        title  = "Processing queue: jobs waiting, being processed, dead-lettered; worker tasks running"
        region = var.region, view = "timeSeries", period = 60
        metrics = [
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue, { stat = "Maximum", label = "jobs waiting" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", queue, { stat = "Maximum", label = "jobs being processed" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.processing_dead_letter[0].name, { stat = "Maximum", label = "jobs in the dead-letter queue" }],
          ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", aws_ecs_cluster.main.name, "ServiceName", aws_ecs_service.worker[0].name, { stat = "Average", label = "worker tasks running", yAxis = "right" }],
        ]
      }
    }
  ]
}

resource "aws_cloudwatch_dashboard" "gateway" {
  dashboard_name = "mediaserver-${var.environment}"
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}
