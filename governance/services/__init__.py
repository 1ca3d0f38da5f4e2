"""Verbs of the governance sub-platform (what other sub-platforms may import)."""
