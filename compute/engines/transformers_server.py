"""Entry point of the built-in CPU engine: ``python -m compute.engines.transformers_server``.

The engine lives in the :mod:`compute.engines.transformers` package; this module only runs
its :func:`~compute.engines.transformers.server.main`, so the command the adapter builds
(:data:`compute.engines.transformers_adapter.SERVER_MODULE`) stays the same.
"""

from __future__ import annotations

import sys

from compute.engines.transformers_adapter import api_key_from_env


def main() -> int:
    # Refuse before importing the engine (torch takes seconds to import).
    if api_key_from_env() is None:
        return 2
    from compute.engines.transformers.server import main as serve

    return serve()


if __name__ == "__main__":
    sys.exit(main())
