"""The evaluator: tasks as data, requests, scoring and metrics; no Django models.

``spec`` parses task/suite YAML, ``template`` renders their Jinja in a sandbox,
``scoring`` turns docs into requests and responses into samples (as lm-evaluation-harness
does), ``filters``/``metrics`` are the plug-in registries, ``aggregate``/``stats``/``ahp``
turn samples into task and suite scores. ``requests``, ``client`` and ``execute`` talk to
endpoints.
"""
