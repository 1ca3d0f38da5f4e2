"""Celery tasks of governance, one module per area (``governance.tasks`` imports them)."""
