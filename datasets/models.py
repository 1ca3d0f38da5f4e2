"""Models of the datasets sub-platform (built in later issues)."""
