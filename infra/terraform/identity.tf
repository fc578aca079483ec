# An external identity provider (README "Identity provider (OIDC) settings"), off by default: with
# jwt_jwks_url the gateway also accepts the provider's RS256/ES256 access tokens, checked against
# jwt_issuer and jwt_audience (the variables refuse one without the others, and plain http). Only
# the gateway authenticates requests; the worker gets none of these.

locals {
  # JWT_* environment of the gateway (empty with no provider)
  identity_environment = merge(
    var.jwt_jwks_url == "" ? {} : {
      JWT_JWKS_URL = var.jwt_jwks_url
      JWT_ISSUER   = var.jwt_issuer
      JWT_AUDIENCE = var.jwt_audience
    },
    var.jwt_role_claim == "" ? {} : { JWT_ROLE_CLAIM = var.jwt_role_claim },
    length(var.jwt_admin_roles) == 0 ? {} : { JWT_ADMIN_ROLES = join(",", var.jwt_admin_roles) },
  )
}
