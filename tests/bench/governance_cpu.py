"""Micro-bench: CPU time per text of the governance checkers on the per-text path.

``python -m tests.bench.governance_cpu`` prints, for short texts (30–80 characters cut
from COLD's dev split, as in ``make bench-governance``), a 1 KB ASCII answer (the
gateway bench's) and a 1 KB Chinese answer, the CPU microseconds per text of the
classifier, the normaliser, the starter lexicon checker, patterns, PII and the full
default pipeline: the best of ``--rounds`` passes, since on a shared machine other work
only adds to a pass. CPU time (``time.process_time``), not wall time."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from governance.moderation.lexicon import LexiconChecker
from governance.moderation.normalize import normalize
from governance.moderation.patterns import PatternChecker
from governance.moderation.pii import PiiChecker
from governance.moderation.pipeline import default_pipeline, load_classifier
from tests.bench.governance import DEFAULT_LABELLED, read_labelled, short_texts
from tests.bench.stub_engine import answer_chunks


def cpu_us(texts: Sequence[str], run: Callable[[str], object], rounds: int) -> float:
    """The least over ``rounds`` passes of the CPU microseconds per text (one warm-up
    pass): on a shared machine, other work only ever adds to a pass's time."""
    for text in texts:
        run(text)
    per_text: list[float] = []
    for _ in range(rounds):
        started = time.process_time()
        for text in texts:
            run(text)
        per_text.append((time.process_time() - started) / len(texts) * 1e6)
    return min(per_text)


def chinese_answer(corpus: Sequence[str], size: int) -> str:
    """About ``size`` bytes of UTF-8 joined from ``corpus`` rows."""
    out: list[str] = []
    total = 0
    for text in corpus:
        out.append(text)
        total += len(text.encode())
        if total >= size:
            break
    return "".join(out).encode()[:size].decode(errors="ignore")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=2000, help="short texts per pass")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    corpus = [text for text, _ in read_labelled(DEFAULT_LABELLED)]
    shorts = short_texts(corpus, args.texts, 42)
    ascii_kb = ["".join(answer_chunks(1024, 4))] * 200
    chinese_kb = [chinese_answer(corpus[i * 40 :], 1024) for i in range(50)] * 4
    classifier = load_classifier()
    checkers: list[tuple[str, Callable[[str], object]]] = [
        ("normalize", normalize),
        ("lexicon (starter)", LexiconChecker().check),
        ("patterns (starter)", PatternChecker().check),
        ("PII", PiiChecker().check),
    ]
    if classifier is not None:
        checkers.append(("classifier", classifier.check))
    pipeline = default_pipeline()
    checkers.append(("default pipeline, run()", pipeline.run))
    print(f"{'CPU µs per text':<28}{'short':>10}{'1 KB ASCII':>12}{'1 KB CJK':>10}")
    for name, run in checkers:
        cells = [cpu_us(texts, run, args.rounds) for texts in (shorts, ascii_kb, chinese_kb)]
        widths = (10, 12, 10)
        print(f"{name:<28}" + "".join(f"{c:>{w}.1f}" for c, w in zip(cells, widths, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
