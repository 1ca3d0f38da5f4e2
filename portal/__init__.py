"""openmaas portal: the Django project package and the hub core."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
