"""The training loop: supervised (token cross-entropy on assistant tokens) or DPO.

Steps are optimizer steps; each gathers ``gradient_accumulation_steps`` micro-batches and
divides the summed loss by the number of loss units in the whole step (tokens for
supervised, pairs for DPO), across ranks too, so accumulation and DDP give the same
update as one large batch. The data order of an epoch comes from ``seed + epoch`` only,
so a resumed run continues with exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.runner import checkpoint
from training.runner.data import IGNORE, batches, collate, collate_pairs, epoch_order, load_examples
from training.runner.model import Dist, build_model, device_of, load_tokenizer
from training.runner.report import Reporter
from training.runner.spec import Spec

MAX_GRAD_NORM = 1.0


@dataclass
class Totals:
    """Sums over the micro-batches of a step or an evaluation."""

    loss: float = 0.0
    units: float = 0.0  # loss tokens (supervised) or pairs (DPO)
    correct: float = 0.0  # argmax == label tokens, or pairs whose chosen reward is higher
    tokens: float = 0.0  # non-padding input tokens
    chosen: float = 0.0  # DPO: summed rewards
    rejected: float = 0.0

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def reduced(self, dist: Dist, device: torch.device) -> Totals:
        """The sums over every rank."""
        if dist.world == 1:
            return self
        names = list(self.__dataclass_fields__)
        t = torch.tensor([getattr(self, n) for n in names], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return Totals(**dict(zip(names, t.tolist(), strict=True)))


@dataclass
class Progress:
    """Where the run is: ``batch`` counts the micro-batches done in ``epoch``."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    trained_tokens: int = 0
    history: list[list[float | None]] = field(default_factory=list)


def linear_schedule(total: int, warmup: int) -> Any:
    """LR multiplier: linear warmup over ``warmup`` steps, then linear decay to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One fine-tuning run; :meth:`run` trains to the end (or a cancel) and reports."""

    def __init__(self, spec: Spec, dist: Dist | None = None) -> None:
        self.spec, self.dist = spec, dist or Dist()
        self.hp = spec.hyperparameters
        self.device = device_of(spec, self.dist)
        seed_everything(spec.seed)
        self.tokenizer = load_tokenizer(spec)
        self.train_rows = self._load(spec.train_file)
        self.valid_rows = self._load(spec.validation_file) if spec.validation_file else []
        self.core, self.reference = build_model(spec, self.device)
        self.model: torch.nn.Module = self.core
        if self.dist.world > 1:
            ids = [self.dist.local_rank] if spec.device == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.core, device_ids=ids)
        params = [p for p in self.core.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=self.hp.learning_rate, weight_decay=self.hp.weight_decay
        )
        per_rank = len(self.train_rows) // self.dist.world
        if per_rank < 1:
            raise ValueError(f"{len(self.train_rows)} training rows for {self.dist.world} ranks")
        self.batches_per_epoch = math.ceil(per_rank / self.hp.batch_size)
        self.steps_per_epoch = math.ceil(
            self.batches_per_epoch / self.hp.gradient_accumulation_steps
        )
        self.total_steps = self.steps_per_epoch * self.hp.n_epochs
        warmup = round(self.hp.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(self.total_steps, warmup)
        )
        self.progress = Progress()
        if spec.resume_dir:
            self._resume(spec.resume_dir)

    # --- setup -------------------------------------------------------------------------

    def _load(self, name: str) -> list[Any]:
        path = self.spec.files_dir / name
        return load_examples(self.tokenizer, path, self.spec.method, self.hp.max_seq_len)

    def _resume(self, directory: Path) -> None:
        state = checkpoint.load_state(directory)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        checkpoint.restore_rng(state["rng"])
        self.progress = Progress(
            step=state["step"],
            epoch=state["epoch"],
            batch=state["batch"],
            trained_tokens=state.get("trained_tokens", 0),
            history=[list(h) for h in state.get("history", [])],
        )

    # --- forward passes ----------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.spec.device == "cuda" and self.spec.dtype == "bfloat16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batch(self, rows: list[Any]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        batch = collate_pairs(rows, pad) if self.spec.method == "dpo" else collate(rows, pad)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits: torch.Tensor = out.logits
        return logits

    def _supervised(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Totals]:
        """Summed cross-entropy over loss tokens (only their logits are upcast and scored)."""
        logits = self._logits(model, batch)[:, :-1]
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE
        picked, target = logits[mask].float(), labels[mask]
        loss = F.cross_entropy(picked, target, reduction="sum")
        correct = (picked.argmax(-1) == target).sum()
        tokens = batch["attention_mask"].sum()
        totals = Totals(loss.item(), float(target.numel()), correct.item(), tokens.item())
        return loss, totals

    def _logps(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row sum of log-probabilities of the labelled tokens."""
        logits = self._logits(model, batch)[:, :-1].float()
        labels = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
        return -nll.sum(-1)

    def _reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            if self.reference is not None:
                return self._logps(self.reference, batch)
            with self.core.disable_adapter():  # type: ignore[operator]
                return self._logps(self.core, batch)

    def _dpo(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Totals]:
        """Sigmoid DPO loss summed over pairs; rewards are beta * (policy - reference) logp."""
        n = batch["input_ids"].shape[0] // 2
        policy = self._logps(model, batch)
        reference = self._reference_logps(batch)
        rewards = self.hp.beta * (policy - reference)
        chosen, rejected = rewards[:n], rewards[n:]
        loss = -F.logsigmoid(chosen - rejected).sum()
        totals = Totals(
            loss=loss.item(),
            units=float(n),
            correct=(chosen > rejected).sum().item(),
            tokens=batch["attention_mask"].sum().item(),
            chosen=chosen.sum().item(),
            rejected=rejected.sum().item(),
        )
        return loss, totals

    def _loss(self, model: torch.nn.Module, rows: list[Any]) -> tuple[torch.Tensor, Totals]:
        batch = self._batch(rows)
        with self._autocast():
            if self.spec.method == "dpo":
                return self._dpo(model, batch)
            return self._supervised(model, batch)

    # --- steps -------------------------------------------------------------------------

    def _units(self, rows: list[Any]) -> int:
        if self.spec.method == "dpo":
            return len(rows)
        return sum(sum(1 for label in e.labels[1:] if label != IGNORE) for e in rows)

    def train_step(self, group: list[list[Any]]) -> Totals:
        """One optimizer step over the micro-batches of ``group`` (lists of rows)."""
        units = torch.tensor(float(sum(self._units(rows) for rows in group)), device=self.device)
        if self.dist.world > 1:
            torch.distributed.all_reduce(units)
        # DDP averages gradients over ranks; scaling by world undoes that, so the step is
        # the mean over every loss unit of every rank.
        scale = self.dist.world / max(units.item(), 1.0)
        step = Totals()
        for i, rows in enumerate(group):
            last = i == len(group) - 1
            no_sync = getattr(self.model, "no_sync", None)
            sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
            with sync:
                loss, totals = self._loss(self.model, rows)
                (loss * scale).backward()
            step.add(totals)
        torch.nn.utils.clip_grad_norm_(
            [p for p in self.core.parameters() if p.requires_grad], MAX_GRAD_NORM
        )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step.reduced(self.dist, self.device)

    @torch.no_grad()
    def evaluate(self) -> Totals:
        """Loss and accuracy over this rank's share of the validation rows, summed over ranks."""
        self.model.eval()
        rows = self.valid_rows[self.dist.rank :: self.dist.world]
        totals = Totals()
        for chunk in batches(list(range(len(rows))), self.hp.batch_size):
            totals.add(self._loss(self.core, [rows[i] for i in chunk])[1])
        self.model.train()
        return totals.reduced(self.dist, self.device)

    def groups(self) -> Iterator[tuple[int, int, list[list[Any]]]]:
        """(epoch, micro-batches done after it, the step's micro-batches) from the current
        position on; every epoch's order comes from ``seed + epoch``."""
        accum = self.hp.gradient_accumulation_steps
        for epoch in range(self.progress.epoch, self.hp.n_epochs):
            order = epoch_order(
                len(self.train_rows), self.spec.seed, epoch, self.dist.rank, self.dist.world
            )
            micro = [[self.train_rows[i] for i in b] for b in batches(order, self.hp.batch_size)]
            start = self.progress.batch if epoch == self.progress.epoch else 0
            for at in range(start, len(micro), accum):
                yield epoch, at + len(micro[at : at + accum]), micro[at : at + accum]

    # --- the run -----------------------------------------------------------------------

    def metrics(
        self, step: Totals, lr: float, seconds: float, valid: Totals | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": self.progress.step,
            "total_steps": self.total_steps,
            "train_loss": step.loss / max(step.units, 1.0),
            # DPO: the share of pairs whose chosen reward beats the rejected one.
            "train_mean_token_accuracy": step.correct / max(step.units, 1.0),
            "valid_loss": valid.loss / max(valid.units, 1.0) if valid else None,
            "valid_mean_token_accuracy": valid.correct / max(valid.units, 1.0) if valid else None,
            "learning_rate": lr,
            "tokens_per_second": step.tokens / max(seconds, 1e-9),
            "gpu_memory_bytes": (
                torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0
            ),
            "trained_tokens": self.progress.trained_tokens,
        }
        if self.spec.method == "dpo":
            out["train_chosen_reward"] = step.chosen / max(step.units, 1.0)
            out["train_rejected_reward"] = step.rejected / max(step.units, 1.0)
        return out

    def _stop_requested(self, reporter: Reporter) -> bool:
        """Rank 0 hears the portal's cancel; the other ranks learn it from rank 0."""
        flag = torch.tensor([1.0 if self.dist.main and reporter.cancelled else 0.0])
        if self.dist.world > 1:
            flag = flag.to(self.device)
            torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def _checkpoint(self, reporter: Reporter, metrics: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        p = self.progress
        directory = self.spec.output_dir / "checkpoints" / f"step-{p.step:06d}"
        position = {
            "step": p.step,
            "epoch": p.epoch,
            "batch": p.batch,
            "trained_tokens": p.trained_tokens,
            "history": p.history,
        }
        checkpoint.save_checkpoint(directory, self.core, self.optimizer, self.scheduler, position)
        reporter.checkpoint(p.step, metrics, directory)

    def step(self, epoch: int, done: int, group: list[list[Any]]) -> dict[str, Any]:
        """Train one step, move the position on, evaluate when due; returns its metrics."""
        p = self.progress
        started = time.perf_counter()
        lr = float(self.scheduler.get_last_lr()[0])
        totals = self.train_step(group)
        seconds = time.perf_counter() - started
        p.step += 1
        p.epoch, p.batch = (epoch + 1, 0) if done >= self.batches_per_epoch else (epoch, done)
        p.trained_tokens += int(totals.tokens)
        due = p.step == self.total_steps or _every(p.step, self.hp.eval_every)
        valid = self.evaluate() if self.valid_rows and due else None
        metrics = self.metrics(totals, lr, seconds, valid)
        keys = (
            "train_loss",
            "train_mean_token_accuracy",
            "valid_loss",
            "valid_mean_token_accuracy",
        )
        p.history.append([p.step, *(metrics[k] for k in keys)])
        return metrics

    def run(self, reporter: Reporter) -> bool:
        """Train to the end and report the result (True), or stop at a cancel (False)."""
        self.model.train()
        for epoch, done, group in self.groups():
            metrics = self.step(epoch, done, group)
            step, last = self.progress.step, self.progress.step == self.total_steps
            if self.dist.main:
                reporter.event({"type": "metrics", "data": metrics}, step / self.total_steps)
            if last or _every(step, self.hp.checkpoint_every):
                self._checkpoint(reporter, metrics)
            if not last and self._stop_requested(reporter):
                if self.dist.main:
                    reporter.event(_message("info", f"cancelled at step {step}"))
                    reporter.flush()
                return False
        if self.dist.main:
            self._result(reporter)
        return True

    def _result(self, reporter: Reporter) -> None:
        directory = self.spec.output_dir / "result"
        full = self.spec.adapter.type == "full"
        checkpoint.save_weights(self.core, directory, self.tokenizer if full else None)
        history = self.progress.history
        valid = [h[3] for h in history if h[3] is not None]
        body = {
            "metrics": {
                "trained_tokens": self.progress.trained_tokens,
                # From the history: a run resumed at its last step trains no step here.
                "train_loss": history[-1][1] if history else None,
                "valid_loss": valid[-1] if valid else None,
            },
            "history": self.progress.history,
        }
        reporter.result(body, directory)


def _every(step: int, every: int) -> bool:
    """Whether ``step`` is a multiple of ``every``; 0 or less means only at the end."""
    return every > 0 and step % every == 0


def _message(level: str, text: str) -> dict[str, Any]:
    return {"type": "message", "level": level, "message": text}
