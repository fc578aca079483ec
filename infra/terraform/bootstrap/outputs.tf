output "state_bucket" {
  description = "Bucket for the environments' backend configuration (backend/<environment>.s3.tfbackend)."
  value       = aws_s3_bucket.state.bucket
}

output "ecr_repository_url" {
  description = "Where CI pushes the gateway image (the image variable is this URL and a tag)."
  value       = aws_ecr_repository.gateway.repository_url
}
