"""Models of the evaluation sub-platform (built in later issues)."""
