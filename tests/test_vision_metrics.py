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
    gap_and_std,
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


# --- Gap and Std ------------------------------------------------------------------------------


def test_gap_and_std_by_hand():
    method = [{"FA": 1, "RA": 10, "MIA_efficacy": 50}, {"FA": 2, "RA": 10}, {"FA": 3, "RA": 13}]
    reference = [{"FA": 4, "RA": 11}, {"FA": 6, "RA": 15}]
    gap, std, per = gap_and_std(method, reference, metrics=("FA", "RA"))
    # FA: mean 2 vs reference mean 5 → |gap| 3; population std sqrt((1 + 0 + 1)/3) = sqrt(2/3).
    # RA: mean 11 vs reference mean 13 → |gap| 2; deviations -1, -1, 2 → std sqrt(6/3) = sqrt(2).
    # Gap = (3 + 2)/2 = 2.5; Std = (sqrt(2/3) + sqrt(2))/2 ≈ 1.1154.
    assert gap == pytest.approx(2.5)
    assert std == pytest.approx((math.sqrt(2 / 3) + math.sqrt(2)) / 2)
    assert per["FA"] == pytest.approx({"mean": 2.0, "std": math.sqrt(2 / 3), "gap": 3.0})
    assert per["RA"] == pytest.approx({"mean": 11.0, "std": math.sqrt(2), "gap": 2.0})


def test_gap_and_std_errors_name_the_problem():
    run = {"FA": 1.0, "RA": 2.0, "TA": 3.0, "MIA": 4.0}
    with pytest.raises(ValueError, match="method: no runs"):
        gap_and_std([], [run])
    with pytest.raises(ValueError, match="reference: no runs"):
        gap_and_std([run], [])
    with pytest.raises(ValueError, match="method run 1 lacks metric"):
        gap_and_std([run, {"FA": 1.0, "RA": 2.0, "TA": 3.0}], [run])
    with pytest.raises(ValueError, match=r"lacks metric.*MIA"):
        gap_and_std([run], [{"FA": 1.0, "RA": 2.0, "TA": 3.0}])
    with pytest.raises(ValueError, match="metrics is empty"):
        gap_and_std([run], [run], metrics=())


# Table 1(a) of the paper (CIFAR-10, ResNet-18, 10% random forget, 5 seeds): mean ± std of
# FA, RA, TA, MIA, then the printed Gap and Std.
RT = ((94.61, 0.46), (100.00, 0.00), (94.25, 0.18), (76.26, 0.54))
TABLE1 = {
    "FT": (((99.16, 0.10), (99.84, 0.06), (94.10, 0.09), (88.77, 0.38)), 4.34, 0.16),
    "RL": (((97.19, 0.21), (99.67, 0.08), (94.03, 0.27), (68.19, 0.95)), 2.80, 0.38),
    "SCRUB": (((92.88, 0.25), (99.62, 0.10), (93.54, 0.22), (82.78, 0.86)), 2.33, 0.36),
    "SCRUB+DO": (((94.90, 0.42), (99.52, 0.09), (93.50, 0.20), (78.26, 0.79)), 0.88, 0.38),
    "SalUn": (((96.99, 0.31), (99.40, 0.28), (93.84, 0.36), (65.76, 1.05)), 3.47, 0.50),
    "SFRon": (((94.67, 3.03), (99.83, 0.13), (93.98, 0.56), (77.80, 5.61)), 0.51, 2.33),
}
# Left out: rows whose printed Gap or Std disagrees with their own printed means and stds by
# more than rounding — GA (Std 0.44, its stds average 0.5625), SalUn+DO (Std 0.35 vs 0.5375),
# SFRon+DO (Gap 0.44 vs 0.4525; its printed FA gap 0.02 is 94.69 − 94.61 = 0.08).


def runs(row: tuple[tuple[float, float], ...]) -> list[dict[str, float]]:
    """Two seeds at mean ± std: their mean and population std are exactly the row's."""
    names = ("FA", "RA", "TA", "MIA")
    return [{k: m + sign * s for k, (m, s) in zip(names, row, strict=True)} for sign in (1, -1)]


def test_table1_scrub_gap_from_the_means():
    rt = {"FA": 94.61, "RA": 100.00, "TA": 94.25, "MIA": 76.26}
    scrub = {"FA": 92.88, "RA": 99.62, "TA": 93.54, "MIA": 82.78}
    gap, std, per = gap_and_std([scrub], [rt])
    # (1.73 + 0.38 + 0.71 + 6.52)/4 = 9.34/4 = 2.335, printed as 2.33.
    assert gap == pytest.approx(2.335)
    assert abs(gap - 2.33) <= 0.005 + 1e-9
    assert std == 0.0  # one seed
    assert [round(per[k]["gap"], 2) for k in ("FA", "RA", "TA", "MIA")] == [1.73, 0.38, 0.71, 6.52]


@pytest.mark.parametrize("method", TABLE1)
def test_table1_gap_and_std(method):
    row, printed_gap, printed_std = TABLE1[method]
    gap, std, _ = gap_and_std(runs(row), runs(RT))
    # Means and stds are printed to 2 decimals, so Gap and Std match to rounding.
    assert abs(gap - printed_gap) <= 0.005 + 1e-9
    assert abs(std - printed_std) <= 0.005 + 1e-9
