# The media bucket: private, encrypted, versioned, tiered, multipart leftovers aborted.

resource "aws_s3_bucket" "media" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery choice per environment, not part of this module.
  #checkov:skip=CKV_AWS_18:Server access logging needs a separate log bucket per account; CloudTrail data events cover audits.
  #checkov:skip=CKV2_AWS_62:No consumer of S3 event notifications: processing is driven by the gateway itself.
  bucket = var.bucket_name
}

resource "aws_s3_bucket_public_access_block" "media" {
  bucket                  = aws_s3_bucket.media.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "media" {
  bucket = aws_s3_bucket.media.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# Default encryption: the tasks run with S3_SSE empty (ecs.tf), so every object is encrypted by this
# rule, SSE-S3, or SSE-KMS with the bucket key when kms_key_arn is set.
resource "aws_s3_bucket_server_side_encryption_configuration" "media" {
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES256) by default; a customer KMS key is used when kms_key_arn is set.
  bucket = aws_s3_bucket.media.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_versioning" "media" {
  bucket = aws_s3_bucket.media.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "media" {
  bucket = aws_s3_bucket.media.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  rule {
    id     = "media-tiering"
    status = "Enabled"
    filter {
      prefix = "media/"
    }
    transition {
      days          = 30
      storage_class = "STANDARD_IA"
    }
    transition {
      days          = 90
      storage_class = "GLACIER_IR"
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
  }

  rule {
    id     = "upload-staging"
    status = "Enabled"
    filter {
      prefix = "tus/"
    }
    expiration {
      days = var.abort_incomplete_multipart_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "partial-uploads"
    status = "Enabled"
    filter {
      prefix = "partials/"
    }
    expiration {
      days = var.abort_incomplete_multipart_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }
}

resource "aws_s3_bucket_cors_configuration" "media" {
  bucket = aws_s3_bucket.media.id
  cors_rule {
    allowed_methods = ["GET", "HEAD"]
    allowed_origins = var.cors_allowed_origins
    allowed_headers = ["Range", "Authorization"]
    expose_headers  = ["Content-Range", "Content-Length", "ETag", "Accept-Ranges"]
    max_age_seconds = 3600
  }
}

resource "aws_s3_bucket_policy" "media_tls_only" {
  bucket = aws_s3_bucket.media.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.media.arn, "${aws_s3_bucket.media.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
  depends_on = [aws_s3_bucket_public_access_block.media]
}
