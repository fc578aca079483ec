# Application load balancer: HTTPS, health checks on /health, internal routes answered 404.

resource "aws_lb" "main" {
  #checkov:skip=CKV2_AWS_28:WAF is attached per environment by the security team's web ACL, outside this module.
  name               = "mediaserver-${var.environment}"
  load_balancer_type = "application"
  internal           = false
  security_groups    = [aws_security_group.alb.id]
  subnets            = var.public_subnet_ids
  # Keep-alive: 60 s, below the gateway's IDLE_CONNECTION_TIMEOUT (120 s, set in the task's
  # environment) so the ALB, not the gateway, closes idle connections (timeouts.tf). Long uploads
  # are not idle: a body that sends nothing for 60 s is closed by the gateway too (IDLE_BODY_TIMEOUT),
  # and /api/events sends a keep-alive every 15 s.
  idle_timeout               = local.alb_idle_timeout
  drop_invalid_header_fields = true
  enable_deletion_protection = true

  access_logs {
    bucket  = var.alb_access_log_bucket
    enabled = var.alb_access_log_bucket != ""
  }

  lifecycle {
    precondition {
      condition     = local.alb_idle_timeout < local.gateway_idle_connection_timeout
      error_message = "The ALB idle timeout must be shorter than the gateway's IDLE_CONNECTION_TIMEOUT."
    }
    precondition {
      condition     = local.cloudfront_origin_keepalive_timeout < local.alb_idle_timeout
      error_message = "CloudFront's origin keep-alive must be shorter than the ALB idle timeout."
    }
  }
}

resource "aws_lb_target_group" "gateway" {
  name        = "mediaserver-${var.environment}"
  port        = var.container_port # only the gateway port: METRICS_PORT is never a target
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  # Draining before SIGTERM; the gateway's own drain (SHUTDOWN_TIMEOUT) follows (timeouts.tf).
  deregistration_delay = local.target_deregistration_delay

  health_check {
    path                = "/health"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.main.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
}

# /health/detailed (store and MongoDB checks, memory) and /metrics are for operators, not the
# internet: the load balancer answers them itself, with the gateway's own 404 body. /metrics is
# served on METRICS_PORT anyway (not on the routed port); this rule also covers a task started
# without METRICS_PORT. Operators reach both from inside the VPC, from operator_security_group_ids
# (network.tf): http://<task IP>:3000/health/detailed and :9100/metrics.
resource "aws_lb_listener_rule" "internal_routes" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      status_code  = "404"
      message_body = jsonencode({ error = { code = "not_found", message = "no such route" } })
    }
  }

  condition {
    path_pattern {
      values = ["/health/detailed", "/health/detailed/*", "/metrics", "/metrics/*"]
    }
  }
}

resource "aws_lb_listener" "http_redirect" {
  load_balancer_arn = aws_lb.main.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}
