# Secrets for the tasks: read at start by ECS (container secrets), never in the task definition.

resource "random_password" "jwt_secret" {
  length  = 64
  special = false
}

resource "aws_ssm_parameter" "jwt_secret" {
  name   = "/mediaserver/${var.environment}/jwt-secret"
  type   = "SecureString"
  value  = random_password.jwt_secret.result
  key_id = var.kms_key_arn
}

resource "aws_ssm_parameter" "mongodb_uri" {
  name   = "/mediaserver/${var.environment}/mongodb-uri"
  type   = "SecureString"
  value  = var.mongodb_uri
  key_id = var.kms_key_arn
}
