"""The launcher's process helpers: they live with the Django-free node agent and are re-used here.

The launcher is project wiring and may import anything; the node agent may import nothing from
``portal``, so the one copy sits in :mod:`compute.agent.procs`.
"""

from compute.agent.procs import free_port, port_open, spawn, stop, wait_for

__all__ = ["free_port", "port_open", "spawn", "stop", "wait_for"]
