"""Models of the governance sub-platform (built in later issues)."""
