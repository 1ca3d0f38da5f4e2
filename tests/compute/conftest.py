"""Fixtures for the compute engine tests: a tiny local Llama model and a running CPU engine.

Nothing here touches the network or the database: the model is built from scratch
(tokenizer trained on a few sentences, randomly initialised weights under a fixed seed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVED_NAME = "tiny-llama"
MAX_MODEL_LEN = 256
STARTUP_DEADLINE_S = 90.0

_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A model serves tokens to many users at once.",
    "Batching requests together makes inference much faster.",
    "Open models can be hosted on your own machines.",
    "Evaluation measures how well a model answers questions.",
    "Training a small model takes minutes, a large one takes weeks.",
    "Please summarise the following paragraph in one sentence.",
    "The weather today is sunny with a light breeze from the west.",
    "Hello, world! How are you doing today?",
    "Numbers like 42, 3.14 and 1000 appear in text as well.",
    "今天天气很好，我们去公园散步。",
    "机器学习模型需要大量的数据来训练。",
    "你好，世界！很高兴见到你。",
    "开源模型可以部署在自己的服务器上。",
    "请用一句话总结下面这段文字。",
    "批处理请求可以让推理速度更快。",
]
_SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(out: Path) -> None:
    """Write a deterministic tiny Llama model directory (tokenizer, config, safetensors)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_SENTENCES * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>"
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # A random model would often pick EOS early; a zero row gives EOS a logit of 0,
        # which is practically never the maximum, so greedy runs reach max_tokens.
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    model.save_pretrained(out, safe_serialization=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local Hugging Face model directory with a tiny random Llama and a BPE tokenizer."""
    out = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_model(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_status(base_url: str) -> int | None:
    """Status of ``GET /health``, or ``None`` while nothing answers on the port."""
    try:
        return httpx.get(base_url + "/health", timeout=1.0).status_code
    except httpx.TransportError:
        return None


@dataclass
class EngineProcess:
    """A running engine subprocess and where to reach it."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_engine(model_dir: Path, log_path: Path, *extra: str) -> EngineProcess:
    """Start ``python -m compute.engines.transformers_server`` and wait for /health (200)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "compute.engines.transformers_server",
        "--model", str(model_dir), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(MAX_MODEL_LEN), *extra,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    engine = EngineProcess(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited with {proc.returncode}:\n{engine.logs()}")
        if health_status(engine.base_url) == 200:
            return engine
        time.sleep(0.1)  # poll interval; the deadline above is what bounds the wait
    stop_engine(engine)
    raise RuntimeError(f"engine not healthy within {STARTUP_DEADLINE_S}s:\n{engine.logs()}")


def stop_engine(engine: EngineProcess, timeout: float = 20.0) -> int:
    """SIGTERM the engine and wait for it; kills it if it does not exit in time."""
    if engine.proc.poll() is None:
        engine.proc.send_signal(signal.SIGTERM)
        try:
            engine.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            engine.proc.kill()
            engine.proc.wait()
    return engine.proc.returncode


@pytest.fixture(scope="session")
def engine_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """The CPU engine as a real subprocess serving the tiny model (batch size 8).

    Teardown checks the engine's SIGTERM contract: it must exit cleanly (status 0).
    """
    log_path = tmp_path_factory.mktemp("engine-logs") / "engine.log"
    # One intra-op thread: on a small shared host, OpenMP workers waiting on a descheduled
    # sibling make each step tens of times slower.
    engine = start_engine(tiny_model_dir, log_path, "--max-batch-size", "8", "--num-threads", "1")
    yield engine
    assert stop_engine(engine) == 0, f"engine did not exit cleanly on SIGTERM:\n{engine.logs()}"


@pytest.fixture(scope="session")
def engine_url(engine_server: EngineProcess) -> str:
    """Base URL of the running engine, e.g. ``http://127.0.0.1:PORT``."""
    return engine_server.base_url
