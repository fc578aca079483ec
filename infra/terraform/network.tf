# Security groups: clients (or, with CloudFront, only CloudFront) reach only the load balancer; the
# load balancer reaches only the gateway port of the tasks; operators in the VPC reach METRICS_PORT too.
# And an S3 gateway endpoint, so upload bytes go to S3 without passing a NAT gateway.

resource "aws_security_group" "alb" {
  # (The description predates the CloudFront-only rule; changing it would replace the group.)
  name        = "mediaserver-${var.environment}-alb"
  description = "MediaServer load balancer: HTTP and HTTPS from anywhere"
  vpc_id      = var.vpc_id
}

# CloudFront's origin-facing addresses, as an AWS-managed prefix list. It counts as about 55
# rules against the security group's rule quota (60 by default): this group has little else.
data "aws_ec2_managed_prefix_list" "cloudfront" {
  count = var.enable_cloudfront ? 1 : 0
  name  = "com.amazonaws.global.cloudfront.origin-facing"
}

# With CloudFront: HTTPS from CloudFront only, so nobody goes around it (or forges the
# X-Forwarded-For entry TRUSTED_PROXY_HOPS=2 trusts). CloudFront reaches the origin over HTTPS
# only (cdn.tf), so port 80 stays closed.
resource "aws_vpc_security_group_ingress_rule" "alb_https_cloudfront" {
  count             = var.enable_cloudfront ? 1 : 0
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from CloudFront origin-facing servers"
  prefix_list_id    = data.aws_ec2_managed_prefix_list.cloudfront[0].id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

# Without CloudFront: HTTPS from clients, and HTTP to be redirected.
resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  count             = var.enable_cloudfront ? 0 : 1
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clients"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  #checkov:skip=CKV_AWS_260:Port 80 only answers a 301 redirect to HTTPS (listener http_redirect); no traffic is served on it.
  count             = var.enable_cloudfront ? 0 : 1
  security_group_id = aws_security_group.alb.id
  description       = "HTTP from clients, redirected to HTTPS"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

moved {
  from = aws_vpc_security_group_ingress_rule.alb_https
  to   = aws_vpc_security_group_ingress_rule.alb_https[0]
}

moved {
  from = aws_vpc_security_group_ingress_rule.alb_http
  to   = aws_vpc_security_group_ingress_rule.alb_http[0]
}

# The load balancer may open connections to the gateway port only: even a listener rule pointing
# at METRICS_PORT could not reach it.
resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the gateway tasks"
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
}

resource "aws_security_group" "tasks" {
  name        = "mediaserver-${var.environment}-tasks"
  description = "MediaServer tasks: traffic from the load balancer only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "Gateway port from the load balancer"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
}

# Operators inside the VPC: /metrics (Prometheus) on METRICS_PORT, which the ALB's group may not
# reach, and /health/detailed on the gateway port, which the ALB answers 404 (alb.tf).
resource "aws_vpc_security_group_ingress_rule" "tasks_metrics" {
  for_each                     = toset(var.operator_security_group_ids)
  security_group_id            = aws_security_group.tasks.id
  description                  = "Prometheus scrapes of /metrics"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.metrics_port
  to_port                      = var.metrics_port
}

resource "aws_vpc_security_group_ingress_rule" "tasks_operators" {
  for_each                     = toset(var.operator_security_group_ids)
  security_group_id            = aws_security_group.tasks.id
  description                  = "Operators: /health/detailed on the gateway port"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to AWS APIs (S3, SSM, ECR, CloudWatch)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "tasks_mongodb" {
  security_group_id = aws_security_group.tasks.id
  description       = "MongoDB (Atlas or DocumentDB) on its standard port"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 27017
  to_port           = 27017
}

# Every uploaded byte goes from the tasks to S3, and image layers come from S3 too (ECR): through a
# gateway endpoint on the private route tables that traffic skips the NAT gateway (no per-GB NAT
# charge; the endpoint itself is free). The default endpoint policy (full access) is kept: the
# endpoint serves the whole route table, other workloads and ECR's layer bucket included; the
# task role limits what the gateway may do.
resource "aws_vpc_endpoint" "s3" {
  count             = var.create_s3_gateway_endpoint ? 1 : 0
  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.private_route_table_ids
  tags              = { Name = "mediaserver-${var.environment}-s3" }

  lifecycle {
    precondition {
      condition     = length(var.private_route_table_ids) > 0
      error_message = "private_route_table_ids must name the route tables of private_subnet_ids (or set create_s3_gateway_endpoint = false when the VPC has an S3 gateway endpoint already)."
    }
  }
}

# The worker tasks (worker.tf): nothing reaches them but operators, on WORKER_PORT (/health and
# /metrics); they reach AWS APIs (SQS, S3, SSM, ECR, CloudWatch) and MongoDB.
resource "aws_security_group" "worker" {
  count       = local.worker_count
  name        = "mediaserver-${var.environment}-worker"
  description = "MediaServer worker tasks: operators on the worker port only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "worker_operators" {
  for_each                     = var.worker_enabled ? toset(var.operator_security_group_ids) : toset([])
  security_group_id            = aws_security_group.worker[0].id
  description                  = "Operators and Prometheus: /health and /metrics on the worker port"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.worker_port
  to_port                      = var.worker_port
}

resource "aws_vpc_security_group_egress_rule" "worker_https" {
  count             = local.worker_count
  security_group_id = aws_security_group.worker[0].id
  description       = "HTTPS to AWS APIs (SQS, S3, SSM, ECR, CloudWatch)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "worker_mongodb" {
  count             = local.worker_count
  security_group_id = aws_security_group.worker[0].id
  description       = "MongoDB (Atlas or DocumentDB) on its standard port"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 27017
  to_port           = 27017
}
