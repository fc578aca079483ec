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
