"""Verbs of the evaluation sub-platform; other apps reach it through this package."""
