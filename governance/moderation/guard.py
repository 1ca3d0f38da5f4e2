"""The guard-model checker: a served chat model judges a text against a rubric.

In the manner of Llama Guard, the model is shown the platform's taxonomy (the 5 classes
and 31 risks of TC260-003, codes ``A1_a`` … ``A5_b``, in Chinese and English) and the
text, and answers ``safe``, or ``unsafe`` with the violated codes on the next line.
:func:`parse_answer` reads that answer even when the model is chatty (reasoning blocks,
Markdown, a sentence around the verdict, Chinese 安全/不安全, codes written ``A2-d``
or by their Chinese names).

The checker is dear (a model call, ``cost`` 100), so it is meant for the texts the cheap
checkers cannot settle: :func:`unsure` says whether a verdict has a score inside the
guard band (default 0.3–0.7) and :meth:`GuardChecker.settle` asks the guard only then,
folding its answer into the verdict. How the model is reached is the caller's business:
``call(messages) -> str`` (the platform's posts a chat completion to the pool through
the gateway, see ``governance.services.classifiers.guard_call``). Pure: no Django.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from governance.moderation.taxonomy import CLASSES, RISKS, rollup
from governance.moderation.types import CheckResult

logger = logging.getLogger(__name__)

Call = Callable[[list[dict[str, Any]]], str]
Role = Literal["user", "assistant"]

DEFAULT_BAND = (0.3, 0.7)
# Characters of the text under review shown to the model; the rest is cut (and said so).
MAX_CHARS = 6000
# The score a category the guard names gets; a "safe" answer pulls unsure scores down to
# just under the band (below any threshold inside it).
UNSAFE_SCORE = 1.0

# The catch-all risk of each class, for an answer that names only the class ("A2").
CLASS_OTHER: dict[str, str] = {
    cls: [code for code in RISKS if code.startswith(cls + "_")][-1] for cls in CLASSES
}


# --- the rubric ------------------------------------------------------------------------


def categories_block() -> str:
    """The taxonomy as the rubric lists it: each class, then its risks, ``code: 中文 /
    English``."""
    lines = []
    for cls, risk in CLASSES.items():
        lines.append(f"{cls}: {risk.zh} / {risk.en}")
        for code, item in RISKS.items():
            if code.startswith(cls + "_"):
                lines.append(f"  {code}: {item.zh} / {item.en}")
    return "\n".join(lines)


RUBRIC = """\
你是内容安全审核员。请依据下列安全类别（TC260-003《生成式人工智能服务安全基本要求》\
附录A的5类31种风险），判断对话中最后一条“{role_zh}”消息是否含有不安全内容。
You are a content-safety reviewer. Using the safety categories below (the 5 classes and \
31 risks of TC260-003, appendix A), decide whether the LAST {role_en} message in the \
conversation contains unsafe content.

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

判断要点 / Guidance:
- 讨论、报道、批评或拒绝有害内容本身不算违规；只有当消息本身表达、宣扬或提供有害内容时才判为不安全。
  Discussing, reporting, criticising or refusing harmful content is not itself a \
violation; judge a message unsafe only when it expresses, promotes or provides it.
- 引号、角色扮演或假设不改变内容的性质。
  Quotation, role-play or a hypothetical frame does not change what the content is.

<BEGIN CONVERSATION>
{conversation}
<END CONVERSATION>

请只按以下格式回答，不要解释 / Answer in exactly this format, with no explanation:
- 第一行 / first line: safe 或 / or unsafe
- 若为 unsafe，第二行列出违反的风险代码，用英文逗号分隔（例如 A2_d,A4_c）。
  If unsafe, the second line lists the violated risk codes, comma-separated (e.g. A2_d,A4_c).
"""

_MARKER = re.compile(r"<\s*(?:BEGIN|END)\s+(?:CONVERSATION|UNSAFE CONTENT CATEGORIES)\s*>", re.I)
_ROLE_NAMES = {"user": ("用户", "User"), "assistant": ("助手", "Assistant")}


def rubric(text: str, *, role: Role = "user", context: Iterable[Mapping[str, str]] = ()) -> str:
    """The prompt asking the guard about ``text`` as the last ``role`` message, after
    the optional earlier ``context`` messages (``{"role", "content"}``)."""
    zh, en = _ROLE_NAMES[role]
    turns = [*context, {"role": role, "content": text}]
    conversation = "\n\n".join(
        f"{_ROLE_NAMES.get(str(t.get('role')), ('用户', 'User'))[1]}: "
        f"{_clip(str(t.get('content', '')))}"
        for t in turns
    )
    return RUBRIC.format(
        role_zh=zh, role_en=en, categories=categories_block(), conversation=conversation
    )


def _clip(text: str) -> str:
    # The text must not close the conversation block and write its own instructions.
    text = _MARKER.sub("", text)
    if len(text) <= MAX_CHARS:
        return text
    return text[:MAX_CHARS] + f"\n[… {len(text) - MAX_CHARS} characters cut]"


# --- the answer ------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardAnswer:
    """What the guard said: ``verdict`` ``"safe"``, ``"unsafe"`` or None (no verdict
    found), and the risk codes it named (known codes only, in order, no repeats)."""

    verdict: Literal["safe", "unsafe"] | None
    codes: tuple[str, ...] = ()


_THINKING = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
_NOT_VERDICT = r"(?![A-Za-z]|评估|审核|类别|风险|策略|要求|性)"
_WORD = rf"(unsafe|not\s+safe|safe|不安全|安全){_NOT_VERDICT}"
# A line that is the verdict, maybe in Markdown or after a label ("结论：", "Answer:").
_VERDICT_LINE = re.compile(
    rf"^[\s*#>_`\"'“”-]*(?:[^\n:：]{{0,40}}[:：][\s*_`\"'“”]*)?{_WORD}", re.M | re.I
)
# Anywhere in the text, leftmost first: "不安全" before its tail "安全".
_VERDICT_ANYWHERE = re.compile(rf"(?<![A-Za-z]){_WORD}", re.I)
_CODE = re.compile(r"(?<![A-Za-z0-9])A([1-5])(?:[\s_.\-]?([a-i]))?(?![A-Za-z0-9])", re.I)
_UNSAFE_NAMES = {risk.zh: code for code, risk in RISKS.items()}


def parse_answer(answer: str) -> GuardAnswer:
    """Read a guard's answer (see the module docstring). A line that states the verdict
    counts first, else the first verdict word anywhere; codes are looked for after it
    (risk codes, class codes standing for their class's catch-all risk, or the risks'
    Chinese names)."""
    text = _THINKING.sub(" ", answer or "")
    # An unfinished reasoning block (the answer was cut) holds no verdict.
    text = re.split(r"<(?:think|thinking|reasoning)>", text, flags=re.I)[0]
    found = _VERDICT_LINE.search(text) or _VERDICT_ANYWHERE.search(text)
    if found is None:
        return GuardAnswer(None)
    word = re.sub(r"\s+", " ", found.group(1).lower())
    if word in ("safe", "安全"):
        return GuardAnswer("safe")
    return GuardAnswer("unsafe", tuple(_codes(text[found.end() :])))


def _codes(text: str) -> list[str]:
    hits: list[tuple[int, str]] = []
    for match in _CODE.finditer(text):
        cls = f"A{match.group(1)}"
        code = f"{cls}_{match.group(2).lower()}" if match.group(2) else CLASS_OTHER[cls]
        if code in RISKS:
            hits.append((match.start(), code))
    for name, code in _UNSAFE_NAMES.items():
        at = text.find(name)
        if at >= 0:
            hits.append((at, code))
    out: list[str] = []
    for _, code in sorted(hits):
        if code not in out:
            out.append(code)
    return out


# --- the checker -----------------------------------------------------------------------


def unsure(scores: Mapping[str, float], band: tuple[float, float] = DEFAULT_BAND) -> list[str]:
    """The categories whose score lies inside ``band`` (inclusive): the cases the
    cheap checkers could not settle."""
    low, high = band
    return sorted(code for code, score in scores.items() if low <= score <= high)


@dataclass
class GuardChecker:
    """The ``guard`` checker: asks a model with the rubric and scores the risk codes it
    names ``UNSAFE_SCORE``. A failed call or an answer without a verdict scores nothing
    and says why in ``detail`` (the check never raises for the model's sake)."""

    name: ClassVar[str] = "guard"
    cost: ClassVar[int] = 100

    call: Call
    role: Role = "user"
    band: tuple[float, float] = DEFAULT_BAND
    model: str = ""
    failures: tuple[type[BaseException], ...] = field(default=(Exception,))

    def check(self, text: str) -> CheckResult:
        """The guard's judgement of ``text`` as a ``role`` message."""
        return self.judge(text)

    def judge(
        self, text: str, *, context: Iterable[Mapping[str, str]] = (), unsure: Iterable[str] = ()
    ) -> CheckResult:
        """:meth:`check` with earlier messages as ``context``; an ``unsafe`` answer
        that names no code is read as confirming the ``unsure`` categories (else
        ``A1_h``, other prohibited content)."""
        messages = [{"role": "user", "content": rubric(text, role=self.role, context=context)}]
        detail: dict[str, Any] = {"model": self.model} if self.model else {}
        try:
            raw = self.call(messages)
        except self.failures as exc:
            logger.warning("guard model call failed: %r", exc)
            return CheckResult(self.name, {}, detail={**detail, "error": str(exc)[:300]})
        answer = parse_answer(raw)
        detail.update(verdict=answer.verdict, codes=list(answer.codes), answer=raw[:500])
        if answer.verdict != "unsafe":
            return CheckResult(self.name, {}, detail=detail)
        codes = list(answer.codes) or [c for c in unsure if c in RISKS] or ["A1_h"]
        return CheckResult(self.name, dict.fromkeys(codes, UNSAFE_SCORE), detail=detail)

    def settle(self, verdict: Any, text: str, threshold: Callable[[str], float]) -> Any:
        """``verdict`` (a pipeline ``Verdict``) settled by the guard when one of its
        scores is inside the band; returned unchanged (the guard not asked) otherwise.

        ``unsafe``: the named categories score ``UNSAFE_SCORE``; ``safe``: the unsure
        scores are lowered to just under the band; no verdict: unchanged apart from
        the guard's result being listed. ``threshold(category)`` decides the flags
        again (``Pipeline.threshold``).
        """
        doubtful = unsure(verdict.scores, self.band)
        if not doubtful:
            return verdict
        result = self.judge(text, unsure=doubtful)
        scores = dict(verdict.scores)
        if result.detail.get("verdict") == "safe":
            floor = max(0.0, self.band[0] - 1e-3)
            for code in doubtful:
                scores[code] = min(scores[code], floor)
        for code, score in rollup(result.scores).items():
            scores[code] = max(scores.get(code, 0.0), score)
        categories = {code: score >= threshold(code) for code, score in scores.items()}
        return replace(
            verdict,
            scores=scores,
            results=[*verdict.results, result],
            categories=categories,
            flagged=any(categories.values()),
        )
