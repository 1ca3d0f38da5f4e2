"""Micro-bench: CPU time per text of the governance checkers on the per-text path.

``python -m tests.bench.governance_cpu`` prints, for short texts (30–80 characters cut
from COLD's dev split, as in ``make bench-governance``), a 72-character ASCII window
(what the stream filter checks per batch), a 1 KB ASCII answer (the gateway bench's) and
a 1 KB Chinese answer, the CPU microseconds per text of the classifier, the normaliser,
the starter lexicon, the starter patterns, the three cheap stages together and the
whole default pipeline: the best of ``--rounds`` passes, since on a shared machine other
work only adds to a pass. CPU time (``time.process_time``), not wall time.

``--against DIR`` (a checkout or ``git archive`` of another commit) loads that tree's
``governance/moderation`` modules beside this one's, alternates their passes, prints
both with the ratio and first checks that both pipelines give equal verdicts.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from governance.moderation import classifier, lexicon, normalize, patterns
from governance.moderation.pii import PiiChecker
from governance.moderation.pipeline import Pipeline
from tests.bench.governance import DEFAULT_LABELLED, read_labelled, short_texts
from tests.bench.stub_engine import answer_chunks

Run = Callable[[str], object]


def cpu_us(texts: Sequence[str], run: Run) -> float:
    """CPU microseconds per text of one pass over ``texts``."""
    started = time.process_time()
    for text in texts:
        run(text)
    return (time.process_time() - started) / len(texts) * 1e6


def best(texts: Sequence[str], runs: Sequence[Run], rounds: int) -> list[float]:
    """The least per-text CPU time of each of ``runs`` over ``rounds`` alternating passes
    (after one warm-up pass each)."""
    for run in runs:
        cpu_us(texts, run)
    least = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            least[i] = min(least[i], cpu_us(texts, run))
    return least


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


def checkers(normalizer: ModuleType, lex: ModuleType, pat: ModuleType, cls: ModuleType) -> Any:
    """(name, run) pairs for one tree's modules."""
    lexicon_checker = lex.LexiconChecker(lex.Lexicon.from_dir(lex.DATA_DIR))
    pattern_checker, pii = pat.PatternChecker(), PiiChecker()
    classifier_checker = cls.ClassifierChecker()
    cheap = Pipeline([lexicon_checker, pattern_checker, pii])
    full = Pipeline([lexicon_checker, pattern_checker, pii, classifier_checker])
    return [
        ("classifier", classifier_checker.check),
        ("normalize", normalizer.normalize),
        ("lexicon (starter)", lexicon_checker.check),
        ("patterns (starter)", pattern_checker.check),
        ("cheap stages (lexicon, patterns, PII)", cheap.run),
        ("default pipeline (all four)", full.run),
    ]


def other_tree(root: Path) -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """The normaliser, lexicon, patterns and classifier modules of the tree at ``root``
    (the lexicon bound to that tree's normaliser; the rest shared with this one)."""
    base = root / "governance" / "moderation"

    def load(name: str, swap: ModuleType | None = None) -> ModuleType:
        key = "governance.moderation.normalize"
        saved = sys.modules[key]
        if swap is not None:
            sys.modules[key] = swap
        try:
            spec = importlib.util.spec_from_file_location(f"other_{name}", base / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        finally:
            sys.modules[key] = saved
        return module

    other_normalize = load("normalize")
    return other_normalize, load("lexicon", other_normalize), load("patterns"), load("classifier")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=1000, help="short texts per pass")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--against", type=Path, help="another tree to compare with")
    args = parser.parse_args(argv)
    corpus = [text for text, _ in read_labelled(DEFAULT_LABELLED)]
    answer = "".join(answer_chunks(1024, 4))
    sets = {
        "short": short_texts(corpus, args.texts, 42),
        "72-ch window": [answer[i : i + 72] for i in range(0, 900, 9)] * 5,
        "1 KB ASCII": [answer] * 100,
        "1 KB CJK": [chinese_answer(corpus[i * 40 :], 1024) for i in range(50)] * 2,
    }
    mine = checkers(normalize, lexicon, patterns, classifier)
    theirs = checkers(*other_tree(args.against)) if args.against else None
    if theirs is not None:
        for texts in sets.values():
            for text in texts[:200]:
                assert mine[-1][1](text) == theirs[-1][1](text), f"verdicts differ: {text!r}"
        print("Both trees' pipelines give equal verdicts on the first 200 texts of each set.")
    print(f"{'CPU µs per text (best of passes)':<40}" + "".join(f"{n:>24}" for n in sets))
    for i, (name, run) in enumerate(mine):
        cells = []
        for texts in sets.values():
            if theirs is None:
                cells.append(f"{best(texts, [run], args.rounds)[0]:.1f}")
            else:
                other, this = best(texts, [theirs[i][1], run], args.rounds)
                cells.append(f"{other:.1f} → {this:.1f} (×{other / this:.1f})")
        print(f"{name:<40}" + "".join(f"{c:>24}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
