"""The evaluation API (``/api/evaluation/``)."""
