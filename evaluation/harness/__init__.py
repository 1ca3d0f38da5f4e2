"""The evaluator: tasks as data, requests, scoring and metrics; no Django models."""
