"""REST API of the hub core under ``/api``."""
