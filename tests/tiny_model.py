"""A deterministic tiny Llama model directory for tests: a byte-level BPE tokenizer
trained on a few sentences, a chat template, and seeded random weights."""

from __future__ import annotations

from pathlib import Path

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
