"""CPU inference engine: an OpenAI-compatible HTTP server over a local Hugging Face model.

Run it as::

    python -m compute.engines.transformers_server --model DIR --served-model-name NAME \
        --host 127.0.0.1 --port PORT [--max-batch-size 8] [--max-model-len N] \
        [--dtype auto|float32|bfloat16|float16] [--device cpu|cuda] \
        [--max-loras 8] [--max-lora-rank 64] \
        [--watermark [--watermark-gamma 0.25] [--watermark-delta 2.0]]

Contract:

* The model is loaded from the local directory only (``local_files_only=True``); the port is
  bound after loading, so ``GET /health`` answering 200 means the engine can serve.
* ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` follow
  OpenAI's request and response shapes, streamed (SSE) or not. Bad input is answered with a
  4xx and OpenAI's error object, never a 500.
* ``GET /v1/engine/stats`` (JSON) and ``GET /metrics`` (Prometheus text) report the
  scheduler's counters, including the largest decode batch it has run.
* Multi-LoRA, as vLLM: ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` loads a
  peft LoRA directory next to the base model (200 with a short text; 400 for a directory it
  cannot serve, a name taken by another path or no room left; the same name and path again
  is a no-op); ``POST /v1/unload_lora_adapter {"lora_name"}`` (404 when unknown) stops
  serving it at once, and frees its weights when its last running request ends. A request
  whose ``model`` is an adapter's name runs with it; ``/v1/models`` lists each adapter with
  the base as ``parent``. Both routes need the bearer key, like all of ``/v1``.
* Watermark (off by default): ``--watermark`` plants the green-list text watermark of
  :mod:`compute.engines.watermark` in every token sampled (greedy included), keyed by
  ``OPENMAAS_WATERMARK_KEY`` from the environment (the server exits without it); the
  logprobs it reports are those of the biased distribution it sampled from.

Batching: one scheduler thread owns the model. Requests wait in a queue; at every iteration
the scheduler admits waiting requests up to ``--max-batch-size``, prefills them together
(left-padded), merges their KV cache into the running batch's cache (padding the shorter one
on the left, masked out), then runs ONE forward pass that decodes a token for every active
sequence. Finished sequences leave the batch between steps. Tokens are handed back to each
request's asyncio queue with ``loop.call_soon_threadsafe``. Rows of different LoRA adapters
(and of the base) share a batch: every forward pass names each row's adapter (peft's
``adapter_names``): 1.4-2.2x the throughput of one batch per adapter over four runs of
``tests/bench/engine_lora.py`` on a shared 2-core host. Once an adapter is loaded, base rows
pass through peft's wrapped layers too (0.7-1.0x the bare model's speed on that small
model: fixed Python cost per layer, which large matrix products dwarf).

Modules, from the wire inwards:

* :mod:`~compute.engines.transformers.server`: command line, model loading, ``main``.
* :mod:`~compute.engines.transformers.api`: aiohttp routes, handlers, error middleware.
* :mod:`~compute.engines.transformers.parsing`: request validation into ``ParsedRequest``.
* :mod:`~compute.engines.transformers.responses`: response bodies, logprobs, SSE chunks.
* :mod:`~compute.engines.transformers.errors`: ``ApiError`` (OpenAI's error object).
* :mod:`~compute.engines.transformers.engine`: the model, tokenizer and scheduler as one.
* :mod:`~compute.engines.transformers.scheduler`: the scheduler thread and its counters.
* :mod:`~compute.engines.transformers.batch`: the running batch and its merged KV cache.
* :mod:`~compute.engines.transformers.lora`: LoRA adapters: names, checks, peft loading.
* :mod:`~compute.engines.transformers.sequence`: one prompt in generation, its outputs.
* :mod:`~compute.engines.transformers.sampling`: sampling parameters, token choice, logprobs.
* :mod:`~compute.engines.transformers.text`: incremental detokenizer, stop strings, token bytes.
"""
