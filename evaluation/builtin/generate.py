"""Regenerate the built-in arithmetic data (``evaluation/builtin/data/arithmetic_*.jsonl``).

The files are shipped; this script is how they were made, so anyone can check or
extend them: ``python -m evaluation.builtin.generate``. The output is deterministic (a
fixed seed), so running it again leaves the files unchanged. The other built-in files
(common sense, instruction following, safety, perplexity) are written by hand.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).with_name("data")
SEED = 20261124
COUNT = 60

# (operator, English wording, Chinese wording, how the answer is computed)
OPERATIONS = (
    ("+", "What is {a} plus {b}?", "{a} 加 {b} 等于多少？"),
    ("-", "What is {a} minus {b}?", "{a} 减 {b} 等于多少？"),
    ("*", "What is {a} times {b}?", "{a} 乘以 {b} 等于多少？"),
)


def problem(pick: random.Random) -> tuple[str, int, int, int]:
    """One operator, its operands and the answer: two-digit sums and differences (never
    negative), products of a one-digit and a two-digit number."""
    op = pick.choice("+-*")
    if op == "*":
        a, b = pick.randint(2, 9), pick.randint(11, 30)
        return op, a, b, a * b
    a, b = pick.randint(10, 99), pick.randint(10, 99)
    if op == "-":
        a, b = max(a, b), min(a, b)
        return op, a, b, a - b
    return op, a, b, a + b


def rows(language: str, seed: int = SEED, count: int = COUNT) -> list[dict[str, str]]:
    pick = random.Random(f"{seed}-{language}")
    wording = {op: (en, zh) for op, en, zh in OPERATIONS}
    out = []
    for _ in range(count):
        op, a, b, answer = problem(pick)
        en, zh = wording[op]
        template = zh if language == "zh" else en
        out.append({"question": template.format(a=a, b=b), "answer": str(answer)})
    return out


def main() -> None:
    for language in ("en", "zh"):
        path = DATA / f"arithmetic_{language}.jsonl"
        lines = [json.dumps(row, ensure_ascii=False) for row in rows(language)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {len(lines)} rows to {path}")


if __name__ == "__main__":
    main()
