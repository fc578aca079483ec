"""Authentication: JWT access tokens, password hashing, the current-user mixin."""
