"""LLM unlearning losses (SPEC §2.3) as pure functions of logits and labels.

Conventions shared by every function here:

* ``logits`` is ``[B, T, V]`` from a causal LM, ``labels`` is ``[B, T]`` with the token ids of
  the answer and :data:`IGNORE` (-100) on prompt and padding positions. As in Hugging Face,
  ``logits[:, t]`` predicts ``labels[:, t + 1]``: each function shifts by one, so the
  *answer positions* are the ``t < T - 1`` with ``labels[:, t + 1] != -100``.
* Everything is computed in float32 (``logits.float()``) whatever the autocast dtype.
* NLL(x) of a sequence is the *summed* token NLL over its answer tokens; log π(y|x) = −NLL(x).
* A batch (or sequence) without any answer token contributes 0 rather than NaN: counts are
  clamped to at least 1 before dividing.
"""

from __future__ import annotations

import math

from torch import Tensor
from torch.nn import functional as F

IGNORE = -100


def _shift(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(logits[:, :-1] in float32, labels[:, 1:]): position t predicts label t + 1."""
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    return logits[:, :-1].float(), labels[:, 1:]


def _answer_log_probs(logits: Tensor, labels: Tensor) -> Tensor:
    """log p over the vocabulary at the answer positions only, ``[N, V]`` (N answer tokens).

    Selecting the positions before the softmax keeps prompt and padding out of memory.
    """
    logits, labels = _shift(logits, labels)
    return F.log_softmax(logits[labels != IGNORE], dim=-1)


def token_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-token NLL after the shift, ``[B, T - 1]``:
    ``nll[b, t] = −log softmax(logits[b, t])[labels[b, t + 1]]``, and 0 where that label is -100.
    """
    logits, labels = _shift(logits, labels)
    b, t, v = logits.shape
    nll = F.cross_entropy(
        logits.reshape(b * t, v), labels.reshape(b * t), ignore_index=IGNORE, reduction="none"
    )
    return nll.view(b, t)


def sequence_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed NLL per sequence over its answer tokens, ``NLL(x_i) = Σ_t nll[i, t]`` (``[B]``,
    float32), and the number of answer tokens ``|y_i|`` (``[B]``, int64)."""
    nll = token_nll(logits, labels)
    return nll.sum(dim=1), (labels[:, 1:] != IGNORE).sum(dim=1)


def ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean token NLL over all answer tokens of the batch, ``Σ_{i,t} nll[i, t] / #answer
    tokens`` -- the loss Hugging Face computes from ``labels``.

    GA = −ce on D_f; GD = ce on D_r; IDK = ce on the refusal encodings of forget questions.
    """
    count = (labels[:, 1:] != IGNORE).sum().clamp_min(1)
    return token_nll(logits, labels).sum() / count


def kl_to_reference(logits: Tensor, ref_logits: Tensor, labels: Tensor) -> Tensor:
    """KL(p_ref ‖ p_θ) at each answer position, summed over the vocabulary and averaged over
    the answer positions of the batch: ``mean_{i,t} Σ_v p_ref,v (log p_ref,v − log p_θ,v)``.

    ``ref_logits`` should come from a no-grad forward of the frozen reference.
    """
    if ref_logits.shape != logits.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and reference logits {tuple(ref_logits.shape)} differ"
        )
    log_p = _answer_log_probs(logits, labels)
    log_ref = _answer_log_probs(ref_logits, labels)
    kl = F.kl_div(log_p, log_ref, log_target=True, reduction="none").sum(dim=-1)
    return kl.sum() / max(kl.numel(), 1)


def npo(nll: Tensor, ref_nll: Tensor, beta: float = 0.1) -> Tensor:
    """Negative preference optimisation on the forget set:
    ``L = −(2/β)·mean_i log σ(β·(NLL_θ(x_i) − NLL_ref(x_i)))`` with summed sequence NLLs.

    Equals (2/β)·log 2 when θ = ref; minimising it raises NLL_θ (the gradient w.r.t. NLL_θ
    is −2·σ(−β·Δ) < 0), bounded unlike GA.
    """
    return -(2.0 / beta) * F.logsigmoid(beta * (nll - ref_nll)).mean()


def simnpo(nll: Tensor, lengths: Tensor, beta: float = 2.5, gamma: float = 0.0) -> Tensor:
    """SimNPO (Fan et al., 2024), reference-free and length-normalised:
    ``L = −(2/β)·mean_i log σ(β·NLL_θ(x_i)/|y_i| − γ)``.

    This is the paper's ``−(2/β) log σ(−(β/|y|)·log π_θ(y|x) − γ)`` with log π = −NLL; its
    minimisation raises the forget NLL. ``|y_i|`` is clamped to at least 1.
    """
    per_token = nll / lengths.to(nll.dtype).clamp_min(1)
    return -(2.0 / beta) * F.logsigmoid(beta * per_token - gamma).mean()


def dpo(
    nll_chosen: Tensor,
    nll_rejected: Tensor,
    ref_nll_chosen: Tensor,
    ref_nll_rejected: Tensor,
    beta: float = 0.1,
) -> Tensor:
    """DPO with chosen = a refusal ("I don't know") and rejected = the true answer:
    ``h = [log π_θ(idk) − log π_θ(true)] − [log π_ref(idk) − log π_ref(true)]`` with
    log π = −summed NLL, and ``L = −(2/β)·mean_i log σ(β·h_i)``.

    The 2/β factor is the authors' scale: 20× standard DPO's ``−log σ(β·h)`` at β = 0.1.
    Equals (2/β)·log 2 when θ = ref.
    """
    h = (nll_rejected - nll_chosen) - (ref_nll_rejected - ref_nll_chosen)
    return -(2.0 / beta) * F.logsigmoid(beta * h).mean()


def maximum_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean over answer positions of KL(U ‖ p_θ), U uniform over the V-token vocabulary:
    ``KL = Σ_v (1/V)(log(1/V) − log p_v) = −log V − mean_v log p_v`` (0 iff p_θ is uniform).
    """
    log_p = _answer_log_probs(logits, labels)
    kl = -math.log(log_p.shape[-1]) - log_p.mean(dim=-1)
    return kl.sum() / max(kl.numel(), 1)


def answer_preservation(nll_idk: Tensor, nll_true: Tensor, beta: float = 0.1) -> Tensor:
    """Answer preservation on retain questions (Yuan et al., "A Closer Look at Machine
    Unlearning for LLMs"): ``L = −(1/β)·mean_i log σ(β·(NLL_θ(q_i, idk) − NLL_θ(q_i, a_i)))``
    with summed NLLs; minimising it keeps the true answer likelier than a refusal.
    """
    return -(1.0 / beta) * F.logsigmoid(beta * (nll_idk - nll_true)).mean()
