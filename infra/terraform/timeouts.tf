# Timeouts that must stay in order along a request's path. Each is used where it applies (with a
# comment there too); the preconditions on aws_lb.main and aws_ecs_task_definition.gateway fail
# the plan, and scripts/check_infra.sh fails the static checks, when the order is broken.
#
# Keep-alive, client side first: whoever closes an idle connection must be the side that opens
# them, or a request sent on a connection the other side is closing gets a 502.
#   CloudFront origin keep-alive (50 s) < ALB idle_timeout (60 s) < gateway IDLE_CONNECTION_TIMEOUT (120 s)
#
# Shutdown: ECS deregisters a task from the target group (draining: requests in flight go on for
# deregistration_delay), then sends SIGTERM; the gateway answers requests in flight for up to
# SHUTDOWN_TIMEOUT and ends unfinished upload bodies at a durable point; SIGKILL follows at
# stopTimeout, which Fargate caps at 120 s.
#   SHUTDOWN_TIMEOUT (90 s) < stopTimeout (120 s) <= 120 s

locals {
  cloudfront_origin_keepalive_timeout = 50
  alb_idle_timeout                    = 60
  gateway_idle_connection_timeout     = 120

  target_deregistration_delay = 60
  gateway_shutdown_timeout    = 90
  container_stop_timeout      = 120
}
