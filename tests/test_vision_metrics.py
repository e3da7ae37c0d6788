"""Classification metrics (SPEC §3.1) against hand-computed values and the paper's Table 1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dualoptim.tasks.vision.metrics import (
    accuracy,
    confidence,
    entropy,
    evaluate,
    mia_efficacy,
    mia_entropy,
    predict,
)

CLASSES = 10


def confident(n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """n one-hot rows (entropy 0), on ``labels`` or class 0."""
    labels = torch.zeros(n, dtype=torch.long) if labels is None else labels
    return nn.functional.one_hot(labels, CLASSES).double()


def uniform(n: int) -> torch.Tensor:
    """n uniform rows (entropy ln 10)."""
    return torch.full((n, CLASSES), 1 / CLASSES, dtype=torch.float64)


def with_confidence(conf: list[float], y: torch.Tensor) -> torch.Tensor:
    """Rows giving p_y = conf to the label y and spreading the rest evenly."""
    c = torch.tensor(conf, dtype=torch.float64)[:, None]
    probs = ((1 - c) / (CLASSES - 1)).expand(len(conf), CLASSES).clone()
    return probs.scatter(1, y[:, None], c)


# --- predict -------------------------------------------------------------------------------


def test_predict_is_batched_softmax_without_grad():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x = torch.randn(10, 4)
    probs = predict(model, x, batch_size=3)  # batches of 3, 3, 3, 1
    assert not probs.requires_grad
    torch.testing.assert_close(probs, model(x).softmax(1).detach())
    torch.testing.assert_close(probs.sum(1), torch.ones(10))


def test_predict_uses_eval_mode_and_restores_every_module():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.9), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    model[2].eval()  # a frozen batch norm inside a training model stays frozen
    x = torch.randn(8, 4)
    a, b = predict(model, x), predict(model, x)
    torch.testing.assert_close(a, b)  # dropout off: deterministic
    assert [m.training for m in model.modules()] == [True, True, True, False, True]
    model.eval()
    predict(model, x)
    assert not any(m.training for m in model.modules())


def test_predict_rejects_empty_input_and_bad_batch_size():
    with pytest.raises(ValueError, match="empty"):
        predict(nn.Linear(4, 2), torch.empty(0, 4))
    with pytest.raises(ValueError, match="batch_size"):
        predict(nn.Linear(4, 2), torch.randn(3, 4), batch_size=0)


# --- accuracy, entropy, confidence ------------------------------------------------------------


def test_accuracy():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert accuracy(probs, torch.tensor([0, 1, 1, 1])) == 75.0  # rows 0, 1, 3 right
    assert accuracy(probs, torch.tensor([1, 0, 1, 0])) == 0.0


def test_accuracy_rejects_empty_and_mismatched():
    with pytest.raises(ValueError, match="empty"):
        accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        accuracy(torch.rand(4, 3), torch.zeros(3, dtype=torch.long))


def test_entropy_by_hand():
    probs = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25] * 4, [0.7, 0.2, 0.1, 0.0]]
    )
    expected = [
        0.0,  # certain
        math.log(2),  # -2 · 0.5 ln 0.5
        math.log(4),  # uniform over 4
        -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)),  # ≈ 0.8018
    ]
    torch.testing.assert_close(entropy(probs), torch.tensor(expected, dtype=torch.float64))


def test_confidence_is_the_probability_of_the_true_label():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    torch.testing.assert_close(
        confidence(probs, torch.tensor([1, 2])), torch.tensor([0.2, 0.6], dtype=torch.float64)
    )


# --- MIA (entropy, the paper's) ---------------------------------------------------------------


def test_mia_entropy_known_proportion():
    # Members certain (entropy 0), non-members uniform (ln 10): the attack separates them, so
    # the MIA of a forget set with 30 certain and 10 uniform samples is 30/40 = 75%.
    p_retain, p_test = confident(200), uniform(50)
    p_forget = torch.cat([confident(30), uniform(10)])
    assert mia_entropy(p_retain, p_test, p_forget) == 75.0
    assert mia_entropy(p_retain, p_test, confident(5)) == 100.0
    assert mia_entropy(p_retain, p_test, uniform(5)) == 0.0


def test_mia_entropy_balances_the_classes():
    # At entropy ln 10 there are 20 members and 10 non-members. Unweighted, "member" wins
    # (20 > 10); balanced (weights 110/(2·100) and 110/(2·10)), it is 20·0.55 = 11 against
    # 10·5.5 = 55, so "non-member" wins and a uniform forget set scores 0.
    p_retain = torch.cat([confident(80), uniform(20)])
    assert mia_entropy(p_retain, uniform(10), uniform(4)) == 0.0
    assert mia_entropy(p_retain, uniform(10), confident(4)) == 100.0


def test_mia_entropy_rejects_empty():
    with pytest.raises(ValueError, match="p_test is empty"):
        mia_entropy(confident(3), uniform(0), uniform(2))


# --- MIA-efficacy (SalUn's) -------------------------------------------------------------------


def test_mia_efficacy_known_proportion_and_first_test_size_members():
    gen = torch.Generator().manual_seed(0)
    y_test = torch.randint(0, CLASSES, (20,), generator=gen)
    y_retain = torch.randint(0, CLASSES, (120,), generator=gen)
    y_forget = torch.randint(0, CLASSES, (8,), generator=gen)
    low = [0.1 + 0.01 * i for i in range(20)]  # non-member confidences 0.10 … 0.29
    p_test = with_confidence(low, y_test)
    # The first 20 retain samples are the members: confidence ≈ 1. The other 100 look exactly
    # like the test set; SalUn leaves them out, else they would outvote it 5:1.
    p_retain = with_confidence([0.99] * 20 + low * 5, y_retain)
    # Forget: 6 with member-like, 2 with non-member-like confidence → 2/8 = 25% non-member.
    p_forget = with_confidence([0.98, 0.99, 0.97, 0.99, 0.98, 0.99, 0.15, 0.2], y_forget)
    assert mia_efficacy(p_retain, y_retain, p_test, y_test, p_forget, y_forget) == 25.0


def test_mia_efficacy_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="retain labels"):
        mia_efficacy(
            uniform(4),
            torch.zeros(3, dtype=torch.long),
            uniform(2),
            torch.zeros(2),
            uniform(2),
            torch.zeros(2),
        )


# --- evaluate ---------------------------------------------------------------------------------


class Logits(nn.Module):
    """Returns its input as logits, so predictions are set by the data."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * x


def test_evaluate_splits_and_keys():
    labels = torch.arange(10) % CLASSES
    train_x = nn.functional.one_hot(labels, CLASSES).float()  # predicts its own label
    train_x[[0, 1]] = train_x[[2, 3]]  # samples 0 and 1 now predict another class
    train_y = labels
    test_y = torch.tensor([0, 1, 2, 3])
    test_x = nn.functional.one_hot(torch.tensor([0, 1, 2, 9]), CLASSES).float()  # 3 of 4 right
    forget, retain = [0, 1, 2, 3], np.arange(4, 10)  # FA 2/4, RA 6/6
    res = evaluate(Logits(), train_x, train_y, forget, retain, test_x, test_y, batch_size=3)
    assert set(res) == {"FA", "RA", "TA", "MIA", "MIA_efficacy"}
    assert (res["FA"], res["RA"], res["TA"]) == (50.0, 100.0, 75.0)
    assert all(0.0 <= res[k] <= 100.0 for k in ("MIA", "MIA_efficacy"))


def test_evaluate_rejects_empty_and_non_integer_indices():
    x, y = torch.eye(CLASSES), torch.arange(CLASSES)
    with pytest.raises(ValueError, match="forget_idx is empty"):
        evaluate(Logits(), x, y, [], [1, 2], x, y)
    with pytest.raises(TypeError, match="retain_idx"):
        evaluate(Logits(), x, y, [0], torch.ones(CLASSES, dtype=torch.bool), x, y)
