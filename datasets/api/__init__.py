"""The dataset hub's REST API, mounted at ``/api/datasets/``."""
