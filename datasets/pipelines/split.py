"""Train/validation split with exact sizes, reproducible from the seed."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from datasets.pipelines.base import PipelineError, Row, Step, param


@dataclass(frozen=True)
class SplitParams:
    validation_fraction: float | None = param(None, min=0.0, max=1.0)
    validation_size: int | None = param(None, min=1)
    seed: int = param(0, min=0, max=2**63 - 1)
    from_split: str = "train"
    validation_name: str = "validation"

    def __post_init__(self) -> None:
        if (self.validation_fraction is None) == (self.validation_size is None):
            raise PipelineError(
                "Give exactly one of validation_fraction and validation_size.",
                param="validation_fraction",
            )
        if self.validation_name == self.from_split:
            raise PipelineError(
                "validation_name must differ from from_split.", param="validation_name"
            )


class Split(Step[SplitParams]):
    """Moves exactly ``validation_size`` rows — or ``floor(n * fraction + 0.5)`` of the
    ``n`` rows — of ``from_split`` to ``validation_name``, chosen uniformly by a
    generator seeded with ``seed``: the same input and seed give the same split. Rows of
    other splits pass through. Memory: one integer per validation row."""

    name = "split"
    Params = SplitParams
    needs_count = True

    def __init__(self, params: SplitParams) -> None:
        super().__init__(params)
        self.chosen: list[int] = []
        self.sizes = {params.from_split: 0, params.validation_name: 0}

    def prepare(self, counts: Mapping[str, int]) -> None:
        """Draws the validation positions among the ``counts[from_split]`` rows."""
        p, total = self.params, counts.get(self.params.from_split, 0)
        if p.validation_size is not None:
            size = p.validation_size
        else:
            size = math.floor(total * (p.validation_fraction or 0.0) + 0.5)
        if size > total:
            message = f"validation_size {size} is more than the {total} {p.from_split} rows."
            raise self.fail(message, "validation_size")
        self.chosen = sorted(random.Random(p.seed).sample(range(total), size))

    def apply(self, rows: Iterator[Row]) -> Iterator[Row]:
        p, position, cursor = self.params, 0, 0
        for row in rows:
            if row.split == p.from_split:
                if cursor < len(self.chosen) and self.chosen[cursor] == position:
                    cursor += 1
                    row = row._replace(split=p.validation_name)
                position += 1
                self.sizes[row.split] += 1
            yield row

    def counters(self) -> dict[str, Any]:
        return {"removed": 0, "rows": dict(self.sizes)}
