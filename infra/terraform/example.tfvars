# Example values: copy to <environment>.tfvars and fill in.
environment        = "production"
vpc_id             = "vpc-0123456789abcdef0"
public_subnet_ids  = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"]
private_subnet_ids = ["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"]
certificate_arn    = "arn:aws:acm:eu-west-2:123456789012:certificate/00000000-0000-0000-0000-000000000000"
bucket_name        = "example-mediaserver-media"
mongodb_uri        = "mongodb+srv://user:password@cluster.example.mongodb.net/mediaserver"
alarm_email        = "ops@example.com"
