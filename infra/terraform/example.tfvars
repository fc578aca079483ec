# Example values: copy to <environment>.tfvars (ignored by git) and fill in. No secrets belong here:
# the JWT secret and the MongoDB URI live in SSM parameters created with `aws ssm put-parameter`
# (README: Deployment), named /mediaserver/<environment>/jwt-secret and .../mongodb-uri by default.
environment             = "production"
vpc_id                  = "vpc-0123456789abcdef0"
public_subnet_ids       = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"]
private_subnet_ids      = ["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"]
private_route_table_ids = ["rtb-0ccccccccccccccc1", "rtb-0ccccccccccccccc2"]
certificate_arn         = "arn:aws:acm:eu-west-2:123456789012:certificate/00000000-0000-0000-0000-000000000000"
bucket_name             = "example-mediaserver-media"
# The deploy (ansible/deploy.yml) passes the image it built with -var image=...
image               = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/mediaserver:0123456789ab"
alarm_email         = "ops@example.com"
monthly_budget_usd  = 300
budget_alert_emails = ["ops@example.com", "finance@example.com"]
# Processing in its own service, fed by SQS (worker.tf); worker_enabled = false keeps it in the gateway
worker_enabled   = true
worker_max_count = 10
# Webhooks, off unless set (README: Webhooks); the signing secret is the SSM parameter
# /mediaserver/<environment>/hook-secret, created like the others
# hook_url         = "https://hooks.example.com/mediaserver"
# hook_events      = ["post-finish", "media-ready", "media-failed"]
# hook_sqs_enabled = true
# An identity provider's tokens besides the gateway's own, off unless set (README: Identity provider)
# jwt_jwks_url    = "https://idp.example.com/realms/media/protocol/openid-connect/certs"
# jwt_issuer      = "https://idp.example.com/realms/media"
# jwt_audience    = "mediaserver-api"
# jwt_role_claim  = "realm_access.roles"
# jwt_admin_roles = ["media-admin"]
