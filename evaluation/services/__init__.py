"""Verbs of the evaluation sub-platform; other apps reach it through this package:
:mod:`~evaluation.services.catalog` (tasks, suites, built-ins),
:mod:`~evaluation.services.endpoints`, :mod:`~evaluation.services.runs` (start, cancel,
the worker's handler, ``on_finished`` hooks) and :mod:`~evaluation.services.auto_eval`."""
