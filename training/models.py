"""Models of the training sub-platform (built in later issues)."""
