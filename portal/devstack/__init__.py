"""The local stack: embedded PostgreSQL, Redis and SeaweedFS plus the platform's processes."""
