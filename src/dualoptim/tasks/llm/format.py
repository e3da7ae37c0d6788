"""Question-answer pairs as token ids: the prompt, the answer, and labels on the answer only.

A prompt comes from the tokenizer's chat template when it has one and from a plain
``Question: … Answer:`` template otherwise (``template="auto"``). Chat templates may inject a
system prompt of their own when none is given (SmolLM2's adds ~29 tokens, about a third of a
TOFU pair); ``system_prompt`` passes one explicitly ("" gives an empty system turn). Prompt and
answer are tokenized separately and concatenated, so the boundary -- where the loss starts --
is exact whatever the tokenizer merges across it. The answer ends with the EOS token, so a
fine-tuned model learns to stop.

Sources hand the engine batches as dicts of *encodings* ``{input_ids, attention_mask,
labels}`` (right-padded, labels -100 on prompt and padding), one per part ("qa", and "idk"
for the refusal answers some losses need), plus the rows' ``index``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

IGNORE = -100  # the label of positions that carry no loss (Hugging Face's convention)
Encoding = dict[str, Tensor]


@dataclass(frozen=True)
class PromptFormat:
    template: Literal["auto", "chat", "plain"] = "auto"
    system_prompt: str | None = None  # chat only; None: whatever the template does by default
    max_length: int = 256

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 tokens, got {self.max_length}")
        if self.template == "plain" and self.system_prompt is not None:
            raise ValueError("system_prompt applies to chat templates, not template='plain'")


@dataclass(frozen=True)
class Pair:
    """One encoded question-answer pair: prompt token ids, then answer token ids."""

    prompt: tuple[int, ...]
    answer: tuple[int, ...]

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt + self.answer


class Formatter:
    """Encodes questions and answers for one tokenizer under one :class:`PromptFormat`."""

    def __init__(self, tokenizer, fmt: PromptFormat = PromptFormat()) -> None:
        self.tokenizer = tokenizer
        self.fmt = fmt
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if fmt.template == "chat" and not has_chat:
            raise ValueError("template='chat' but the tokenizer has no chat template")
        self.chat = has_chat if fmt.template == "auto" else fmt.template == "chat"
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token: answers could not end")
        self.eos = int(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        self.pad = int(pad if pad is not None else self.eos)

    def prompt_text(self, question: str) -> str:
        if not self.chat:
            return f"Question: {question}\nAnswer:"
        messages = [{"role": "user", "content": question}]
        if self.fmt.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.fmt.system_prompt})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def prompt_ids(self, question: str) -> tuple[int, ...]:
        # chat templates carry their own special tokens; a plain prompt gets the tokenizer's
        # usual ones (a BOS for Llama-style tokenizers)
        ids = self.tokenizer(self.prompt_text(question), add_special_tokens=not self.chat)
        return tuple(ids["input_ids"])

    def pair(self, question: str, answer: str) -> Pair:
        """The pair, its answer cut to fit ``max_length``; a prompt that leaves no room for
        the answer is an error, not a silent empty loss."""
        prompt = self.prompt_ids(question)
        text = answer if self.chat else " " + answer
        answer_ids = (*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.eos)
        room = self.fmt.max_length - len(prompt)
        if room < 1:
            raise ValueError(
                f"the prompt of {question[:60]!r} takes {len(prompt)} tokens, at least "
                f"max_length={self.fmt.max_length}: raise max_length"
            )
        return Pair(prompt, answer_ids[:room])

    def pairs(self, questions: Sequence[str], answers: Sequence[str]) -> list[Pair]:
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        return [self.pair(q, a) for q, a in zip(questions, answers, strict=True)]


def collate(pairs: Sequence[Pair], pad: int) -> Encoding:
    """Right-padded input ids, attention mask and labels (-100 outside the answer)."""
    if not pairs:
        raise ValueError("cannot collate an empty batch")
    width = max(len(p.ids) for p in pairs)
    input_ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, p in enumerate(pairs):
        n, start = len(p.ids), len(p.prompt)
        input_ids[row, :n] = torch.tensor(p.ids)
        labels[row, start:n] = torch.tensor(p.answer)
        mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def collate_prompts(prompts: Sequence[Sequence[int]], pad: int) -> Encoding:
    """Left-padded prompts for batched generation (new tokens follow the last column)."""
    if not prompts:
        raise ValueError("cannot collate an empty batch")
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


class PairSource:
    """A Source for the engine: rows of named parts ("qa", "idk"), batched as encodings."""

    def __init__(self, parts: Mapping[str, Sequence[Pair]], pad: int) -> None:
        sizes = {name: len(p) for name, p in parts.items()}
        if not parts or len(set(sizes.values())) != 1:
            raise ValueError(f"a source needs parts of one common length, got {sizes}")
        self.parts = {name: list(p) for name, p in parts.items()}
        self.pad = pad
        self._len = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self._len

    def batch(self, index: Tensor) -> dict[str, Tensor | Encoding]:
        rows = index.tolist()
        out: dict[str, Tensor | Encoding] = {
            name: collate([part[i] for i in rows], self.pad) for name, part in self.parts.items()
        }
        out["index"] = index
        return out
