output "alb_dns_name" {
  description = "DNS name of the load balancer."
  value       = aws_lb.main.dns_name
}

output "service_url" {
  description = "Where clients reach the gateway."
  value       = var.domain_name != "" ? "https://${var.domain_name}" : (var.enable_cloudfront ? "https://${aws_cloudfront_distribution.gateway[0].domain_name}" : "https://${aws_lb.main.dns_name}")
}

output "bucket_name" {
  description = "The media bucket."
  value       = aws_s3_bucket.media.bucket
}

output "cluster_name" {
  description = "ECS cluster."
  value       = aws_ecs_cluster.main.name
}

output "service_name" {
  description = "ECS service."
  value       = aws_ecs_service.gateway.name
}

output "task_family" {
  description = "Task definition family (deploys register new revisions of it)."
  value       = aws_ecs_task_definition.gateway.family
}

output "log_group" {
  description = "CloudWatch log group of the gateway."
  value       = aws_cloudwatch_log_group.gateway.name
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = local.alarm_topic_arn
}

output "dashboard_url" {
  description = "CloudWatch dashboard of this environment."
  value       = "https://${var.region}.console.aws.amazon.com/cloudwatch/home?region=${var.region}#dashboards/dashboard/${aws_cloudwatch_dashboard.gateway.dashboard_name}"
}

output "secret_parameter_names" {
  description = "SSM SecureString parameters the tasks read (create them with aws ssm put-parameter before the first apply); names only, never values."
  value       = local.secret_parameter_names
}

output "s3_gateway_endpoint_id" {
  description = "The S3 gateway endpoint on the private route tables (null when create_s3_gateway_endpoint is false)."
  value       = one(aws_vpc_endpoint.s3[*].id)
}

output "processing_queue_url" {
  description = "PROCESSING_QUEUE_URL: the queue the gateway sends processing jobs to (null without the worker service)."
  value       = one(aws_sqs_queue.processing[*].url)
}

output "processing_dead_letter_queue_url" {
  description = "PROCESSING_DEAD_LETTER_QUEUE_URL: jobs that failed processing_max_attempts times (null without the worker service)."
  value       = one(aws_sqs_queue.processing_dead_letter[*].url)
}

output "worker_service_name" {
  description = "ECS service of the workers (null when worker_enabled is false); the deploy waits for it too."
  value       = one(aws_ecs_service.worker[*].name)
}

output "worker_task_family" {
  description = "Task definition family of the workers (null when worker_enabled is false)."
  value       = one(aws_ecs_task_definition.worker[*].family)
}

output "hook_queue_url" {
  description = "HOOK_SQS_QUEUE_URL: the queue receiving webhook events (null unless hook_sqs_enabled)."
  value       = one(aws_sqs_queue.hooks[*].url)
}

output "hook_queue_arn" {
  description = "The hook queue's ARN, for the consumer's IAM policy (sqs:ReceiveMessage, sqs:DeleteMessage; kms:Decrypt with kms_key_arn) (null unless hook_sqs_enabled)."
  value       = one(aws_sqs_queue.hooks[*].arn)
}
