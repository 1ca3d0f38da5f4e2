"""Dataset hub: repos, versions, upload, validation, statistics and processing."""
