"""``make bench-eval``: our evaluator beside lm-evaluation-harness on the same weights and
the same multiple-choice documents — the same accuracy, and how fast each is.

    python -m tests.bench.eval --output docs/benchmarks.md [--model DIR] [--data FILE]

- The model: ``--model DIR`` (a Hugging Face folder) or the demo model
  (:func:`portal.demo.builder.build_demo_model`, cached under ``.bench/``).
- The documents: ``--data FILE`` in any multiple-choice layout
  :mod:`evaluation.harness.importers` reads (one task, prompt ``--template``), or by
  default the built-in common-sense tasks ``commonsense_zh`` and ``commonsense_en``
  with their own templates.
- lm-eval: lm-evaluation-harness (:data:`REQUIREMENTS`) in its own virtual environment
  (``.bench/lm-eval-venv``, created on first run with pip; it needs Hugging Face
  ``datasets``, which the platform never installs). Its torch and transformers are the
  platform's, reached through a ``.pth`` file, so both sides run the same model code. The
  documents, normalised by our importer, are written to a JSON Lines file and a local
  task (``dataset_path: json``) with the same ``doc_to_text``, ``doc_to_choice``,
  ``doc_to_target`` and ``target_delimiter``; it runs ``lm-eval run --model hf
  --model_args pretrained=DIR,dtype=float32 --device cpu --log_samples``.
- Ours: the harness (spec, scoring, the OpenAI client, execute) against the platform's
  CPU engine (``python -m compute.engines.transformers_server``, float32) serving the same
  folder, through ``/v1/completions`` with ``echo`` and ``logprobs`` as for any endpoint.

Both report ``acc`` and ``acc_norm``; the bench compares them to 4 decimals, per sample
too (printing the first disagreements and the largest log-likelihood difference), and
reports samples per second (lm-eval: its own evaluation time, model load included;
ours: the run against the already started engine, and the engine start on its own).
Threads are pinned (``--threads``, default 1) for both, so the comparison is fair on a
shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from compute.agent.procs import free_port, spawn, stop, wait_for
from tests.bench.gateway import cpu_model, load_average, memory_gib, write_section

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = ROOT / "evaluation" / "builtin"
REQUIREMENTS = Path(__file__).with_name("lm-eval-requirements.txt")
LM_EVAL_VERSION = "0.4.13"
DEFAULT_TASKS = ("commonsense_zh", "commonsense_en")
DEFAULT_TEMPLATE = "Question: {{ question }}\nAnswer:"
SERVED_NAME = "bench/eval"
ENGINE_KEY = "sk-bench-eval-engine"
METRICS = ("acc", "acc_norm")
PROGRESS = re.compile(r"Running loglikelihood requests: 100%.*?\[([0-9:]+)<")


def say(message: str) -> None:
    print(f"[bench-eval] {message}", flush=True)


@dataclass
class Case:
    """One multiple-choice task as both tools see it."""

    name: str
    docs: list[dict[str, Any]]
    doc_to_text: str
    target_delimiter: str = " "


@dataclass
class Side:
    """One tool's results: per task, per document index, the metrics; and its timing."""

    tool: str
    per_doc: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    lls: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    seconds: float = 0.0
    startup_s: float = 0.0
    note: str = ""

    @property
    def samples(self) -> int:
        return sum(len(docs) for docs in self.per_doc.values())

    def mean(self, task: str, metric: str) -> float:
        values = [m[metric] for m in self.per_doc[task].values()]
        return sum(values) / len(values)


# --- the documents ---------------------------------------------------------------------


def django_ready() -> None:
    """The harness's error types derive from ``portal.errors``, which needs settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    # One line per HTTP request from the client would bury the report.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cases(args: argparse.Namespace) -> list[Case]:
    from evaluation.harness.importers import MC_LAYOUTS, detect_layout, load_docs

    if args.data:
        layout = args.layout or detect_layout(args.data)
        if layout not in MC_LAYOUTS:
            raise SystemExit(f"{args.data}: layout {layout} is not multiple choice")
        docs = load_docs(args.data, layout)[: args.limit]
        name = "bench_" + "".join(c if c.isalnum() else "_" for c in args.data.stem.lower())
        return [Case(name[:60], docs, args.template)]
    out = []
    for name in DEFAULT_TASKS:
        spec = yaml.safe_load((BUILTIN / "tasks" / f"{name}.yaml").read_text(encoding="utf-8"))
        docs = load_docs(BUILTIN / "data" / spec["dataset"]["builtin"], "mc_jsonl")
        out.append(
            Case(name, docs[: args.limit], spec["doc_to_text"], spec.get("target_delimiter", " "))
        )
    return out


def our_yaml(case: Case) -> str:
    return yaml.safe_dump(
        {
            "task": case.name,
            "dataset": {"builtin": f"{case.name}.jsonl", "layout": "mc_jsonl"},
            "output_type": "multiple_choice",
            "doc_to_text": case.doc_to_text,
            "doc_to_choice": "{{ choices }}",
            "doc_to_target": "{{ answer }}",
            "target_delimiter": case.target_delimiter,
            "num_fewshot": 0,
            "metrics": [{"name": "acc"}, {"name": "acc_norm"}],
        },
        allow_unicode=True,
        sort_keys=False,
    )


def lm_eval_yaml(case: Case, data_file: Path) -> str:
    return yaml.safe_dump(
        {
            "task": case.name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data_file)}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": case.doc_to_text,
            "doc_to_choice": "{{ choices }}",
            "doc_to_target": "{{ answer }}",
            "target_delimiter": case.target_delimiter,
            "num_fewshot": 0,
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        },
        allow_unicode=True,
        sort_keys=False,
    )


# --- lm-eval --------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path) -> None:
    """Create ``venv`` with :data:`REQUIREMENTS` unless it has them already. The platform's
    site-packages come after the venv's own (a ``.pth`` file), so torch and transformers
    are shared, never reinstalled, and nothing is written to the platform's environment."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    stamp = venv / f".lm-eval-{LM_EVAL_VERSION}-{digest}"
    if stamp.exists():
        return
    if not venv_python(venv).exists():
        say(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    own = subprocess.run(
        [str(venv_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(own, "zz-openmaas-platform.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    say(f"installing lm_eval=={LM_EVAL_VERSION} into {venv} (first time: a few minutes)")
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, "--quiet", "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
        raise RuntimeError("pip could not install lm-eval: " + " / ".join(errors[-3:]))
    stamp.touch()


def run_lm_eval(
    args: argparse.Namespace, model_dir: Path, all_cases: list[Case], work: Path
) -> Side:
    tasks_dir, out_dir = work / "lm-eval-tasks", work / "lm-eval-out"
    tasks_dir.mkdir(parents=True)
    for case in all_cases:
        data_file = tasks_dir / f"{case.name}.jsonl"
        data_file.write_text(
            "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in case.docs)
        )
        (tasks_dir / f"{case.name}.yaml").write_text(lm_eval_yaml(case, data_file))
    argv = [
        str(args.venv / "bin" / "lm-eval"),
        "run",
        "--model", "hf",
        "--model_args", f"pretrained={model_dir},dtype=float32",
        "--device", "cpu",
        "--batch_size", args.lm_eval_batch_size,
        "--tasks", ",".join(case.name for case in all_cases),
        "--include_path", str(tasks_dir),
        "--output_path", str(out_dir),
        "--log_samples",
    ]  # fmt: skip
    # Not the project on the path: its Django app ``datasets`` would hide Hugging Face's.
    env = {
        **{
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")
        },
        **threads_env(args.threads),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(work / "hf-home"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    say("lm-eval: " + " ".join(argv[1:]))
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"lm-eval failed ({done.returncode}):\n{done.stderr[-4000:]}")
    results = json.loads(next(out_dir.rglob("results_*.json")).read_text())
    total = float(results.get("total_evaluation_time_seconds", wall))
    loop = progress_seconds(done.stderr)
    side = Side("lm-eval", seconds=loop if loop else total, startup_s=total)
    side.note = f"process wall time {wall:.1f}s"
    for case in all_cases:
        samples_file = next(out_dir.rglob(f"samples_{case.name}_*.jsonl"))
        per_doc, lls = {}, {}
        for line in samples_file.read_text().splitlines():
            row = json.loads(line)
            per_doc[int(row["doc_id"])] = {m: float(row[m]) for m in METRICS}
            lls[int(row["doc_id"])] = [float(resp[0]) for resp in row["filtered_resps"]]
        side.per_doc[case.name], side.lls[case.name] = per_doc, lls
    return side


def progress_seconds(stderr: str) -> float | None:
    """The elapsed time of lm-eval's last "Running loglikelihood requests" progress bar
    (tqdm's ``[MM:SS<``, whole seconds), or ``None`` when it printed none."""
    found = PROGRESS.findall(stderr.replace("\r", "\n"))
    if not found:
        return None
    parts = [int(part) for part in found[-1].split(":")]
    return float(sum(part * 60**power for power, part in enumerate(reversed(parts))))


# --- ours ------------------------------------------------------------------------------


def threads_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def start_engine(args: argparse.Namespace, model_dir: Path, log: Path) -> tuple[Any, str]:
    port = free_port()
    argv = [
        sys.executable, "-m", "compute.engines.transformers_server",
        "--model", str(model_dir), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--max-batch-size", str(args.engine_batch_size), "--num-threads", str(args.threads),
    ]  # fmt: skip
    env = {
        **os.environ,
        **threads_env(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OPENMAAS_ENGINE_API_KEY": ENGINE_KEY,
        "PYTHONPATH": str(ROOT),
    }
    proc = spawn(argv, log=log, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        import httpx

        return httpx.get(f"{base}/health", timeout=2).status_code == 200

    wait_for(healthy, timeout_s=180, what="engine", proc=proc, log=log)
    return proc, base


async def run_ours_async(args: argparse.Namespace, all_cases: list[Case], base: str) -> Side:
    from evaluation.harness.client import OpenAIClient
    from evaluation.harness.execute import run_task
    from evaluation.harness.scoring import build_instances
    from evaluation.harness.spec import parse_task

    client = OpenAIClient(
        f"{base}/v1",
        ENGINE_KEY,
        SERVED_NAME,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
    )
    side = Side("openmaas")
    for case in all_cases:
        task = parse_task(our_yaml(case), name=case.name)
        instances = build_instances(task, case.docs, [])
        samples: list[Any] = []
        started = time.perf_counter()
        await run_task(
            task, instances, client, on_samples=samples.extend, should_stop=lambda: False
        )
        side.seconds += time.perf_counter() - started
        errors = [s for s in samples if s.error]
        if errors:
            raise RuntimeError(f"{case.name}: {len(errors)} samples failed: {errors[0].error}")
        side.per_doc[case.name] = {
            s.doc_index: {m: float(s.metrics[m]) for m in METRICS} for s in samples
        }
        side.lls[case.name] = {s.doc_index: loglikelihoods(s.output) for s in samples}
    close = getattr(client, "aclose", None) or getattr(client, "close", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    return side


def loglikelihoods(output: Any) -> list[float]:
    """The per-choice log-likelihoods in a multiple-choice sample's ``output``
    (``{"logprobs": [...], "is_greedy": [...]}``)."""
    values = output.get("logprobs") if isinstance(output, dict) else None
    return [float(v) for v in values] if isinstance(values, list) else []


def run_ours(args: argparse.Namespace, model_dir: Path, all_cases: list[Case], work: Path) -> Side:
    log = work / "engine.log"
    started = time.perf_counter()
    proc, base = start_engine(args, model_dir, log)
    startup = time.perf_counter() - started
    try:
        side = asyncio.run(run_ours_async(args, all_cases, base))
    finally:
        stop(proc)
    side.startup_s = startup
    return side


# --- comparison and report ------------------------------------------------------------


@dataclass
class Comparison:
    rows: list[tuple[str, str, float, float]]  # task, metric, lm-eval, ours
    disagreements: list[str]
    max_ll_diff: float | None
    agree: bool


def compare(theirs: Side, ours: Side, all_cases: list[Case]) -> Comparison:
    rows, disagreements, diffs = [], [], []
    agree = True
    for case in all_cases:
        for metric in METRICS:
            a, b = theirs.mean(case.name, metric), ours.mean(case.name, metric)
            rows.append((case.name, metric, a, b))
            agree &= round(a, 4) == round(b, 4)
        for index in sorted(theirs.per_doc[case.name]):
            got = ours.per_doc[case.name].get(index)
            want = theirs.per_doc[case.name][index]
            if got != want:
                agree = False
                disagreements.append(
                    f"{case.name}[{index}]: lm-eval {want}, ours {got}; lls lm-eval "
                    f"{fmt_lls(theirs.lls[case.name].get(index))}, ours "
                    f"{fmt_lls(ours.lls[case.name].get(index))}"
                )
            mine = ours.lls[case.name].get(index) or []
            theirs_lls = theirs.lls[case.name].get(index) or []
            if mine and len(mine) == len(theirs_lls):
                diffs += [abs(x - y) for x, y in zip(mine, theirs_lls, strict=True)]
    return Comparison(rows, disagreements, max(diffs) if diffs else None, agree)


def fmt_lls(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values or []) + "]"


def render(
    args: argparse.Namespace,
    all_cases: list[Case],
    theirs: Side,
    ours: Side,
    result: Comparison,
    before: str,
    model_label: str,
) -> str:
    import torch
    import transformers

    now = datetime.now(UTC)
    data = (
        f"`{args.data.name}` ({len(all_cases[0].docs)} docs)"
        if args.data
        else "the built-in `commonsense_zh` and `commonsense_en` tasks "
        f"({' + '.join(str(len(c.docs)) for c in all_cases)} docs, four choices each)"
    )
    lines = [
        f"## Evaluation parity with lm-evaluation-harness (make bench-eval, {now:%Y-%m-%d %H:%M})",
        "",
        f"Measured {now:%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs ({cpu_model()}), "
        f"{memory_gib()} memory, Linux {platform.release()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, lm-eval {LM_EVAL_VERSION}; {args.threads} torch "
        f"thread(s) each. Load average before the run: {before}; after: {load_average()}.",
        "",
        f"{model_label}, float32 on CPU; {data}, zero-shot. lm-eval: `--model hf "
        f"--batch_size {args.lm_eval_batch_size}` on a local task (`dataset_path: json`) "
        "with our templates. Ours: the harness against the platform's CPU engine serving "
        f"the same folder (`/v1/completions`, `echo` + `logprobs`; client concurrency "
        f"{args.concurrency}, {args.batch_size} prompts per request, engine batch "
        f"{args.engine_batch_size}).",
        "",
        "| task | metric | lm-eval | openmaas | same to 4 decimals |",
        "|---|---|---:|---:|---|",
    ]
    for task, metric, a, b in result.rows:
        same = "yes" if round(a, 4) == round(b, 4) else "**no**"
        lines.append(f"| {task} | {metric} | {a:.4f} | {b:.4f} | {same} |")
    n = theirs.samples
    lines += [
        "",
        f"Per sample: {n - len(result.disagreements)} of {n} documents have the same "
        f"`acc` and `acc_norm`"
        + (
            f"; largest per-choice log-likelihood difference {result.max_ll_diff:.2e}."
            if result.max_ll_diff is not None
            else "."
        ),
        "",
        "| tool | samples | seconds | samples/s | notes |",
        "|---|---:|---:|---:|---|",
        f"| lm-eval (hf, in process) | {n} | {theirs.seconds:.0f} | {n / theirs.seconds:.2f} "
        f"| its log-likelihood loop (tqdm, whole seconds); its whole evaluation "
        f"{theirs.startup_s:.1f}s with imports, model and task loading; {theirs.note} |",
        f"| openmaas (harness → engine over HTTP) | {ours.samples} | {ours.seconds:.1f} | "
        f"{ours.samples / ours.seconds:.2f} | from the first request to the last sample, "
        f"engine already up (its start: {ours.startup_s:.1f}s) |",
    ]
    lines += [
        "",
        "Reading: both sides run the same forward passes on the same weights (float32), so "
        "the scores must agree exactly; the log-likelihoods differ only in the last digits "
        "(the two sides batch and pad differently). lm-eval's "
        "loop is in process; ours pays HTTP, JSON and the engine's scheduler per request and "
        "shares the CPUs with the client. lm-eval's loop time is tqdm's whole seconds, so "
        "compare speeds on runs of a minute or more (a larger `--data`, `--limit`).",
    ]
    if result.disagreements:
        lines += ["", "First disagreements:", ""]
        lines += [f"- {line}" for line in result.disagreements[:5]]
    return "\n".join(lines) + "\n"


def demo_model(work_root: Path, steps: int) -> tuple[Path, str]:
    """The demo model trained for ``steps`` steps, built once into ``work_root``: the
    weights' quality does not matter for parity, and the full recipe takes long on a
    busy CPU."""
    from portal.demo.builder import build_demo_model

    folder = work_root / f"eval-demo-model-{steps}"
    if not (folder / "model.safetensors").exists():
        say(f"building the demo model ({steps} steps) into {folder}, once")
        build_demo_model(folder, steps=steps, say=lambda m: say(f"demo model: {m}"))
    return folder, f"The demo model (`openmaas/demo-tiny` recipe, {steps} training steps)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Our evaluator beside lm-eval on the same MC docs."
    )
    parser.add_argument("--output", type=Path, help="markdown file to put the section into")
    parser.add_argument("--model", type=Path, help="a Hugging Face model folder (default: demo)")
    parser.add_argument("--demo-steps", type=int, default=40, help="demo model's steps")
    parser.add_argument("--data", type=Path, help="a multiple-choice file (default: built-ins)")
    parser.add_argument("--layout", help="the file's layout (default: detected)")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="doc_to_text for --data")
    parser.add_argument("--limit", type=int, default=None, help="first N docs per task")
    parser.add_argument("--lm-eval-batch-size", default="1", help="1, 8, … or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for each tool")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16, help="our prompts per request")
    parser.add_argument("--engine-batch-size", type=int, default=8)
    parser.add_argument("--venv", type=Path, default=ROOT / ".bench" / "lm-eval-venv")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    before = load_average()
    django_ready()
    all_cases = cases(args)
    ensure_venv(args.venv)
    if args.model:
        model_dir, label = args.model.resolve(), f"Model `{args.model.name}`"
    else:
        model_dir, label = demo_model(ROOT / ".bench", args.demo_steps)
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        work = Path(tmp)
        theirs = run_lm_eval(args, model_dir, all_cases, work)
        say(f"lm-eval: {theirs.samples} samples in {theirs.seconds:.1f}s")
        ours = run_ours(args, model_dir, all_cases, work)
        say(f"openmaas: {ours.samples} samples in {ours.seconds:.1f}s")
    result = compare(theirs, ours, all_cases)
    for line in result.disagreements[:10]:
        say("disagreement: " + line)
    section = render(args, all_cases, theirs, ours, result, before, label)
    print(section)
    if args.output:
        write_section(args.output, section)
    return 0 if result.agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
