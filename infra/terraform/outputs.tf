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
  value       = aws_sns_topic.alarms.arn
}
