# Secrets: the JWT secret, the MongoDB URI and (optionally) the metrics token and the webhooks'
# signing secret are SSM SecureString parameters created outside Terraform (`aws ssm put-parameter`,
# README: Deployment), so their values are never in the Terraform state, a plan or a variable file.
# Terraform knows only their names; ECS reads them when a task starts (container `secrets`, by ARN,
# with the execution role) and hands them to the gateway as environment variables.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  parameter_prefix = "/mediaserver/${var.environment}"

  # environment variable of the gateway => parameter name
  secret_parameter_names = merge(
    {
      JWT_SECRET  = coalesce(var.jwt_secret_parameter_name, "${local.parameter_prefix}/jwt-secret")
      MONGODB_URI = coalesce(var.mongodb_uri_parameter_name, "${local.parameter_prefix}/mongodb-uri")
    },
    var.metrics_token_parameter_name == "" ? {} : { METRICS_TOKEN = var.metrics_token_parameter_name },
    # the HMAC key of the webhooks' signatures (hooks.tf), with hook_url only
    var.hook_url == "" ? {} : { HOOK_SECRET = coalesce(var.hook_secret_parameter_name, "${local.parameter_prefix}/hook-secret") },
  )

  # Hierarchical names start with "/", so the name follows "parameter" directly in the ARN.
  secret_parameter_arns = {
    for env_name, parameter in local.secret_parameter_names :
    env_name => "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter${parameter}"
  }
}
