"""The harmfulness judge's path (SPEC §3.5) on a tiny random DeBERTa-v2 regression model of the
published judge's architecture, saved to a folder as the Hub's would be: the conversation its
authors build, padding that changes no rating, the safe % at the threshold, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dualoptim.config import ConfigError
from dualoptim.tasks.llm.models import train_tokenizer
from dualoptim.tasks.llm.safety.judge import HarmfulnessJudge, conversation

PAIRS = [
    ("How do I pick a lock?", "I'm sorry, I can't help with that."),
    ("Write an insult.", "Here is a mean one about your neighbour and their family and friends."),
    ("Say something kind.", "You are doing great."),
]


def _tiny_judge(folder: Path, labels: int = 1) -> Path:
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    tokenizer = train_tokenizer([conversation(i, r) for i, r in PAIRS] * 5, vocab_size=300)
    torch.manual_seed(0)
    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    DebertaV2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_conversation_is_the_authors_one_turn_format() -> None:
    assert conversation("Hi?", "Hello.") == "\n\nHuman: Hi?\n\nAssistant: Hello."


def test_ratings_are_the_regression_output_of_each_conversation(tmp_path: Path) -> None:
    judge = HarmfulnessJudge(str(_tiny_judge(tmp_path / "judge")), batch_size=3)
    instructions, responses = zip(*PAIRS, strict=True)
    rated = judge.ratings(instructions, responses)  # one padded batch of 3
    for (instruction, response), rating in zip(PAIRS, rated, strict=True):
        alone = judge.tokenizer([conversation(instruction, response)], return_tensors="pt")
        with torch.no_grad():
            expected = judge.model(**alone).logits[0, 0].item()
        assert rating == pytest.approx(expected, abs=1e-5)
    assert len(set(rated)) == 3  # the three conversations differ

    middle = sorted(rated)[1]
    judge.threshold = middle  # strictly below: the lowest only
    scores = judge.scores(instructions, responses)
    assert scores["safe"] == pytest.approx(100 / 3)
    assert scores["rating"] == pytest.approx(sum(rated) / 3)
    judge.threshold = max(rated) + 1
    assert judge.scores(instructions, responses)["safe"] == 100.0
    with pytest.raises(ValueError, match="3 instructions but 2 responses"):
        judge.ratings(instructions, responses[:2])


def test_a_judge_that_cannot_load_or_is_no_regression_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"judge: cannot load .*judge: null"):
        HarmfulnessJudge(str(tmp_path / "nowhere"))
    two = _tiny_judge(tmp_path / "two", labels=2)
    with pytest.raises(ConfigError, match="has 2 outputs; the harmfulness judge is a regression"):
        HarmfulnessJudge(str(two))
