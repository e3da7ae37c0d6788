"""Classification metrics (SPEC §3.1): FA/RA/TA, the entropy MIA of the paper's tables and
SalUn's MIA-efficacy (Gap/Std against retraining are task-agnostic: dualoptim.bench.stats).

The attacks only see softmax outputs, so ``predict`` runs a model once per split and every
metric works on the resulting probabilities.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from torch import Tensor, nn

#: The four metrics behind the paper's Gap and Std.
TABLE_METRICS: tuple[str, ...] = ("FA", "RA", "TA", "MIA")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _check_rows(t: Tensor, name: str, ndim: int) -> None:
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if len(t) == 0:
        raise ValueError(f"{name} is empty")


def _predict_batches(model: nn.Module, batches: Iterable[Tensor]) -> Tensor:
    """Softmax of ``model`` over ``batches``, concatenated on the CPU.

    Each module's own train flag is saved and restored (not just the root's), so a model with,
    e.g., frozen batch-norm layers comes back exactly as it was.
    """
    modes = {m: m.training for m in model.modules()}
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = first.device if first is not None else torch.device("cpu")
    model.eval()
    try:
        with torch.no_grad():
            out = [model(b.to(device)).float().softmax(1).cpu() for b in batches]
    finally:
        for m, training in modes.items():
            m.training = training
    return torch.cat(out)


def predict(model: nn.Module, x: Tensor, *, batch_size: int = 512) -> Tensor:
    """Softmax probabilities (N, classes) of ``model`` on ``x``, in eval mode, without grad."""
    _check_batch_size(batch_size)
    if len(x) == 0:
        raise ValueError("x is empty")
    return _predict_batches(model, (x[i : i + batch_size] for i in range(0, len(x), batch_size)))


def _predict_rows(model: nn.Module, x: Tensor, rows: Tensor, batch_size: int) -> Tensor:
    # Gathers one batch of rows at a time instead of copying the whole subset of x.
    return _predict_batches(
        model, (x[rows[i : i + batch_size]] for i in range(0, len(rows), batch_size))
    )


def accuracy(probs: Tensor, y: Tensor) -> float:
    """Top-1 accuracy in %, from probabilities (or logits) and integer labels."""
    _check_rows(probs, "probs", 2)
    y = torch.as_tensor(y)
    if y.shape != probs.shape[:1]:
        raise ValueError(f"labels of shape {tuple(y.shape)} for {len(probs)} predictions")
    return 100.0 * (probs.argmax(1).cpu() == y.cpu()).double().mean().item()


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy (nats) of each row of ``probs``, with 0·log 0 = 0; float64."""
    return torch.special.entr(probs.double()).sum(1)


def confidence(probs: Tensor, y: Tensor) -> Tensor:
    """The probability each row gives its true label, p_y; float64."""
    y = torch.as_tensor(y, device=probs.device)
    if y.shape != probs.shape[:1]:
        raise ValueError(f"labels of shape {tuple(y.shape)} for {len(probs)} predictions")
    return probs.double().gather(1, y.long()[:, None]).squeeze(1)


def _attack(
    members: Tensor, non_members: Tensor, targets: Tensor, classifier: LogisticRegression | SVC
) -> np.ndarray:
    """Fit ``classifier`` on one scalar feature (members 1, non-members 0); predict ``targets``."""
    x = torch.cat([members, non_members]).cpu().numpy()[:, None]
    y = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    return classifier.fit(x, y).predict(targets.cpu().numpy()[:, None])


def mia_entropy(p_retain: Tensor, p_test: Tensor, p_forget: Tensor) -> float:
    """% of D_f an entropy attack calls "member": the MIA of the paper's tables.

    Logistic regression on each sample's softmax entropy, D_r members vs D_t non-members;
    balanced class weights because D_r is many times larger than D_t.
    """
    for p, name in ((p_retain, "p_retain"), (p_test, "p_test"), (p_forget, "p_forget")):
        _check_rows(p, name, 2)
    attack = LogisticRegression(class_weight="balanced")
    pred = _attack(entropy(p_retain), entropy(p_test), entropy(p_forget), attack)
    return 100.0 * float(np.mean(pred == 1))


def mia_efficacy(
    p_retain: Tensor,
    y_retain: Tensor,
    p_test: Tensor,
    y_test: Tensor,
    p_forget: Tensor,
    y_forget: Tensor,
) -> float:
    """SalUn's MIA-efficacy: % of D_f an attack on the confidence p_y calls "non-member".

    SVC (rbf, C=3, gamma="auto") with members = the first |D_t| samples of D_r (all of D_r if
    it is smaller) and non-members = D_t, as in SalUn's code, which balances the classes by
    truncation instead of weights.
    """
    for p, name in ((p_retain, "p_retain"), (p_test, "p_test"), (p_forget, "p_forget")):
        _check_rows(p, name, 2)
    if len(y_retain) != len(p_retain):
        raise ValueError(f"{len(y_retain)} retain labels for {len(p_retain)} predictions")
    n = len(p_test)
    members = confidence(p_retain[:n], torch.as_tensor(y_retain)[:n])
    attack = SVC(C=3, kernel="rbf", gamma="auto")
    pred = _attack(members, confidence(p_test, y_test), confidence(p_forget, y_forget), attack)
    return 100.0 * float(np.mean(pred == 0))


def _as_index(idx: Tensor | Sequence[int] | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(idx)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if t.ndim != 1 or t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be a 1-D array of integer indices, got {t.dtype} {t.shape}")
    return t.long()


def evaluate(
    model: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    forget_idx: Tensor | Sequence[int] | np.ndarray,
    retain_idx: Tensor | Sequence[int] | np.ndarray,
    test_x: Tensor,
    test_y: Tensor,
    *,
    batch_size: int = 512,
    efficacy: bool = True,
) -> dict[str, float]:
    """FA, RA, TA, MIA and (unless ``efficacy`` is False: its SVC is the slow part)
    MIA_efficacy, all %, of ``model``; D_f and D_r are rows of the training set given by
    ``forget_idx`` and ``retain_idx``."""
    _check_batch_size(batch_size)
    forget = _as_index(forget_idx, "forget_idx")
    retain = _as_index(retain_idx, "retain_idx")
    train_y, test_y = torch.as_tensor(train_y), torch.as_tensor(test_y)
    p_forget = _predict_rows(model, train_x, forget, batch_size)
    p_retain = _predict_rows(model, train_x, retain, batch_size)
    p_test = predict(model, test_x, batch_size=batch_size)
    y_forget, y_retain = train_y[forget], train_y[retain]
    metrics = {
        "FA": accuracy(p_forget, y_forget),
        "RA": accuracy(p_retain, y_retain),
        "TA": accuracy(p_test, test_y),
        "MIA": mia_entropy(p_retain, p_test, p_forget),
    }
    if efficacy:
        metrics["MIA_efficacy"] = mia_efficacy(
            p_retain, y_retain, p_test, test_y, p_forget, y_forget
        )
    return metrics
