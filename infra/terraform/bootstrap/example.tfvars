# Example values for the bootstrap stack: copy to account.tfvars (ignored by git) and fill in.
region            = "eu-west-2"
state_bucket_name = "example-mediaserver-tfstate-123456789012"
