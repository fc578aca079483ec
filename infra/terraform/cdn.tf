# Optional: CloudFront in front of the load balancer, and a DNS name.

resource "aws_cloudfront_distribution" "gateway" {
  #checkov:skip=CKV_AWS_68:WAF is attached per environment by the security team's web ACL, outside this module.
  #checkov:skip=CKV_AWS_86:Access logging goes to a per-account log bucket configured outside this module.
  #checkov:skip=CKV_AWS_310:A single origin (the ALB); origin failover needs a second region.
  #checkov:skip=CKV_AWS_374:Uploads come from everywhere: no geo restriction.
  #checkov:skip=CKV2_AWS_32:API and upload responses carry their own security headers (set by the gateway).
  #checkov:skip=CKV2_AWS_47:The WAF (with the Log4j rule set) is attached outside this module.
  #checkov:skip=CKV2_AWS_42:A custom certificate is used when domain_name is set; without it the default certificate is the only option.
  count       = var.enable_cloudfront ? 1 : 0
  enabled     = true
  comment     = "MediaServer ${var.environment}"
  aliases     = var.domain_name == "" ? [] : [var.domain_name]
  price_class = "PriceClass_100"

  origin {
    domain_name = aws_lb.main.dns_name
    origin_id   = "alb"
    custom_origin_config {
      http_port              = 80
      https_port             = 443
      origin_protocol_policy = "https-only"
      origin_ssl_protocols   = ["TLSv1.2"]
      origin_read_timeout    = 60
      # Keep-alive: 50 s, below the ALB's idle timeout (60 s), itself below the gateway's (timeouts.tf).
      origin_keepalive_timeout = local.cloudfront_origin_keepalive_timeout
    }
  }

  default_cache_behavior {
    target_origin_id         = "alb"
    viewer_protocol_policy   = "redirect-to-https"
    allowed_methods          = ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]
    cached_methods           = ["GET", "HEAD"]
    cache_policy_id          = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad" # Managed-CachingDisabled
    origin_request_policy_id = "216adef6-5c7f-47e4-b989-5492eafa07d3" # Managed-AllViewer
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = var.domain_name == ""
    acm_certificate_arn            = var.domain_name == "" ? null : var.cloudfront_certificate_arn
    ssl_support_method             = var.domain_name == "" ? null : "sni-only"
    minimum_protocol_version       = "TLSv1.2_2021"
  }
}

resource "aws_route53_record" "gateway" {
  count   = var.domain_name != "" && var.route53_zone_id != "" ? 1 : 0
  zone_id = var.route53_zone_id
  name    = var.domain_name
  type    = "A"
  alias {
    name                   = var.enable_cloudfront ? aws_cloudfront_distribution.gateway[0].domain_name : aws_lb.main.dns_name
    zone_id                = var.enable_cloudfront ? aws_cloudfront_distribution.gateway[0].hosted_zone_id : aws_lb.main.zone_id
    evaluate_target_health = !var.enable_cloudfront
  }
}
