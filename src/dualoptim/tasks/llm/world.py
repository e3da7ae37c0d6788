"""The references every LLM run shares, made once and cached (SPEC §2.3, §3.3).

The target is fine-tuned on the forget split plus the retain rows in use; the retain model
on those retain rows only -- it never saw the forget authors, so it is the reference of
Forget Quality. Both are trained by the engine (a retain-only run: the engine is the only
training loop) and cached as safetensors with their evaluation, keyed by the content of
everything that determines them (the rows they learn and are evaluated on, the base model's
weights and vocabulary, the recipe), so the references are measured once and always found,
and replaced data or a replaced base model retrains.

Over 400 lines: the world is one object on purpose. Every run of a sweep shares its data,
base model, formatter, references and their cached evaluations; split into pieces, each run
would carry all of them, and the real-world task's subclass would override across modules.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from torch import Tensor, nn

from dualoptim.config import ConfigError
from dualoptim.io import cached_state, fingerprint, read_json, write_json
from dualoptim.optim.settings import build_optimizer
from dualoptim.tasks.llm import closer_look as cl
from dualoptim.tasks.llm import metrics as tofu
from dualoptim.tasks.llm.closer_look_models import HFEntailmentModel, MiniLMEmbedder
from dualoptim.tasks.llm.config import FinetuneRecipe, LLMExperiment, TofuData
from dualoptim.tasks.llm.data import RETAIN_OF, TofuItem, load_split
from dualoptim.tasks.llm.downstream import DownstreamUnavailableError, evaluate_downstream
from dualoptim.tasks.llm.evaluation import (
    EVAL_DEFINITIONS,
    CloserLookModels,
    Evaluation,
    evaluate_splits,
    mean_nll,
)
from dualoptim.tasks.llm.format import Formatter, Pair, PairSource
from dualoptim.tasks.llm.methods import FineTune
from dualoptim.tasks.llm.models import (
    TINY,
    check_lora_targets,
    load_pretrained,
    tiny_llama,
    with_lora,
)
from dualoptim.tasks.llm.refusals import REFUSALS, refusal
from dualoptim.unlearn import EngineConfig, PhaseOptions, RunState, Schedule, unlearn
from dualoptim.unlearn.sharding import full_state_dict

T = TypeVar("T")


@dataclass
class TofuSplits:
    """The rows one experiment uses: training sets and the four evaluation splits."""

    forget: list[TofuItem]
    retain: list[TofuItem]
    evaluation: dict[str, list[TofuItem]]

    @property
    def texts(self) -> list[str]:
        rows = [*self.forget, *self.retain, *(r for s in self.evaluation.values() for r in s)]
        return [t for r in rows for t in (r.question, r.answer, *r.perturbed_answers)] + [
            *(r.paraphrased_answer for r in rows if r.paraphrased_answer),
            *REFUSALS,
        ]


def load_splits(data: TofuData) -> TofuSplits:
    forget = load_split(data.forget_split, data.source)
    retain = load_split(RETAIN_OF[data.forget_split], data.source)
    retain_eval = load_split("retain_perturbed", data.source)
    if data.retain_rows is not None:
        retain, retain_eval = _first_retain_rows(data, retain, retain_eval)
    evaluation = {
        "forget": load_split(f"{data.forget_split}_perturbed", data.source),
        "retain": retain_eval,
        "real_authors": load_split("real_authors_perturbed", data.source),
        "world_facts": load_split("world_facts_perturbed", data.source),
    }
    return TofuSplits(forget, retain, evaluation)


def _first_retain_rows(
    data: TofuData, retain: list[TofuItem], retain_eval: list[TofuItem]
) -> tuple[list[TofuItem], list[TofuItem]]:
    """The first ``data.retain_rows`` retain rows and the ``retain_perturbed`` rows among them.

    In TOFU (and the built-in data) ``retain_perturbed`` is the retain split's first rows
    (400 of 3600; 40 of 360), so the retain evaluation is its first min(N, its length) rows:
    rows both models were fine-tuned on. A source with another layout would evaluate rows
    neither model saw, so it is refused.
    """
    n, split = data.retain_rows, RETAIN_OF[data.forget_split]
    where = "the built-in data" if data.source in (None, "builtin") else f"TOFU {data.source}"
    if n > len(retain):
        raise ValueError(
            f"data.retain_rows {n} exceeds the {len(retain)} rows of {split} in {where}; "
            f"set data.retain_rows <= {len(retain)} (or null: all)"
        )
    retain, retain_eval = retain[:n], retain_eval[:n]
    for i, (row, evaluated) in enumerate(zip(retain, retain_eval, strict=False)):
        if (row.question, row.answer) != (evaluated.question, evaluated.answer):
            raise ValueError(
                f"row {i} of retain_perturbed in {where} is not row {i} of {split}: "
                "data.retain_rows needs TOFU's layout (retain_perturbed = the retain split's "
                "first rows); set data.retain_rows: null to use every retain row"
            )
    return retain, retain_eval


def adamw_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: none on biases and norm weights (1-d tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


class World:
    """A seed-independent context: tokenizer, formatter, rows, the two fine-tuned models.

    The real-world task's world (``tasks.llm.realworld.world``) is a subclass: it reads other
    files, may filter them with the base model (the probe), and unlearns the base model itself,
    so those three steps are methods it overrides."""

    #: The evaluation roles whose Prob is tracked during unlearning (``eval_every``).
    curve_roles: tuple[str, ...] = ("forget", "retain")
    #: The forget split's row number of ``splits.forget[0]``: a continual request's view
    #: trains on later rows and keeps each row's refusal (IDK) as the whole split has it.
    forget_offset: int = 0
    #: Whether rows carry Forget Quality (a continual request's view has no retain model
    #: for its forget set so far).
    forget_quality: bool = True

    def __init__(self, exp: LLMExperiment, progress: bool = True) -> None:
        self.exp = exp
        self.progress = progress
        self.cache = Path(exp.cache_dir)
        loaded = self._load_splits()
        self.tokenizer, self._base = self._base_model(loaded.texts)
        if exp.model.lora is not None:  # before anything is trained
            check_lora_targets(self._base, exp.model.lora.target_modules, exp.model.name)
        self.formatter = Formatter(self.tokenizer, exp.model.prompt)
        self.splits = self._usable_splits(loaded)
        self.forget_pairs = self._pairs(self.splits.forget)
        self.retain_pairs = self._pairs(self.splits.retain)
        # the Closer-Look models, loaded now: one that cannot be loaded (a Hub id offline)
        # stops the run before anything is trained, not at its first evaluation
        self.embedder: cl.Embedder | None = _load_model("embedder", exp.embedder, _embedder)
        self.entailment: cl.EntailmentModel | None = _load_model(
            "entailment", exp.entailment, HFEntailmentModel
        )
        self.forget_refusals = self._forget_refusals() if self.entailment is not None else []
        #: Why the downstream benchmarks gave no numbers (their data could not be loaded)
        self.downstream_unavailable: str | None = None

    # ------------------------------------------------------------------ data and models
    def _load_splits(self) -> TofuSplits:
        return load_splits(self.exp.data)

    def _usable_splits(self, loaded: TofuSplits) -> TofuSplits:
        """The rows the runs use, chosen once the base model and formatter exist: all of
        them here (the real-world world keeps what the base model knows)."""
        return loaded

    @property
    def reference_seed(self) -> int:
        """The seed the references are made with: the tiny model's initial weights and the
        fine-tuning's batch order."""
        return self.exp.finetune.seed

    def _base_model(self, texts: list[str]):
        spec = self.exp.model
        if spec.name == TINY:
            from dualoptim.tasks.llm.models import train_tokenizer

            tokenizer = train_tokenizer(texts, spec.tiny.vocab_size)
            return tokenizer, tiny_llama(len(tokenizer), spec.tiny, self.reference_seed)
        model, tokenizer = load_pretrained(spec.name, self.cache / "models", spec.dtype)
        return tokenizer, model

    def new_model(self, state: dict[str, Tensor]) -> nn.Module:
        model = copy.deepcopy(self._base)
        model.load_state_dict(state)
        return model

    def adapted(self, model: nn.Module) -> nn.Module:
        """The model unlearning trains: ``model`` itself, or with ``model.lora`` set, ``model``
        wrapped in LoRA adapters (only they train; see docs/llm.md, "LoRA")."""
        lora = self.exp.model.lora
        return model if lora is None else with_lora(model, lora, self.exp.model.name)

    def _pairs(self, items: list[TofuItem], answers: list[str] | None = None) -> list[Pair]:
        answers = answers if answers is not None else [it.answer for it in items]
        return self.formatter.pairs([it.question for it in items], answers)

    def request_groups(self, group_rows: int) -> list[int]:
        """Each forget row's group for continual requests: TOFU's authors, ``group_rows``
        consecutive rows each (tasks/llm/requests.py)."""
        return [row // group_rows for row in range(len(self.splits.forget))]

    def keep_forget_evaluation(self, rows: list[int]) -> None:
        """Called on a continual request's view with the forget-evaluation rows it measures:
        a world whose evaluation reads more than ``splits`` narrows it here (the real-world
        cosine targets)."""

    def refusal_pairs(self, items: list[TofuItem], offset: int) -> list[Pair]:
        seed = self.exp.data.refusal_seed
        return self._pairs(items, [refusal(offset + i, seed) for i in range(len(items))])

    @cached_property
    def fingerprint(self) -> str:
        """The rows actually used (training and evaluation, after ``retain_rows``), as
        records carry it."""
        return fingerprint(self.splits)

    @cached_property
    def _base_fingerprint(self) -> str:
        """The base model's weights and tokenizer as loaded, so a model replaced at the same
        Hub id or folder retrains (hashing costs about 1 s per GB of weights)."""
        tokenizer = (self.tokenizer.get_vocab(), getattr(self.tokenizer, "chat_template", None))
        return fingerprint(self._base.state_dict(), tokenizer)

    @property
    def key(self) -> str:
        """Everything that determines the references, the evaluation and the runs' models
        (LoRA only when set: a config without it keeps its key from before LoRA existed).
        The rows' content stands for the data, not where they were read from: the same
        TOFU from the Hub, an absolute or a relative folder reuses the same records. The
        downstream options, when set, too: their numbers are part of every record."""
        e = self.exp
        data = replace(e.data, source=None)
        parts = (self.fingerprint, self._base_fingerprint, data, e.model.finetuned, e.finetune)
        lora = () if e.model.lora is None else (e.model.lora,)
        downstream = () if e.downstream is None else (e.downstream,)
        return fingerprint(*parts, e.eval, e.embedder, *lora, *self.definitions, *downstream)

    @property
    def definitions(self) -> tuple[Any, ...]:
        """The metric definitions in the keys of the cached evaluations and the record ids:
        ``EVAL_DEFINITIONS`` and the entailment model when a Closer-Look model is set. A
        config with neither model computes nothing that changed since version 1 (only
        cosine and entailment did), so it keeps the keys and ids it had then: its cached
        evaluations and records hold the numbers it computes now."""
        e = self.exp
        if e.embedder is None and e.entailment is None:
            return ()
        return (EVAL_DEFINITIONS, e.entailment)

    @cached_property
    def _training_pairs(self) -> dict[str, list[Pair]]:
        return {"target": self.forget_pairs + self.retain_pairs, "retain": self.retain_pairs}

    @cached_property
    def _model_keys(self) -> dict[str, str]:
        """What determines each fine-tuned model: the base model, the tokenized rows it
        learns (their content, not the data's path) and the recipe. LoRA is not part of it:
        both are fine-tuned in full, and runs with and without LoRA share them."""
        e = self.exp
        return {
            which: fingerprint(which, self._base_fingerprint, pairs, e.model.finetuned, e.finetune)
            for which, pairs in self._training_pairs.items()
        }

    def _finetuned(self, which: str) -> tuple[dict[str, Tensor], float]:
        """State dict (cached) and training seconds of the model fine-tuned as ``which``."""
        path = self.cache / f"{which}-{self._model_keys[which]}.safetensors"
        pairs = self._training_pairs[which]
        return cached_state(path, partial(self._finetune, pairs, self.exp.finetune))

    def _finetune(self, pairs: list[Pair], recipe: FinetuneRecipe) -> dict[str, Tensor]:
        """A copy of the base model fine-tuned on ``pairs`` by the engine (retain steps only)."""
        model = copy.deepcopy(self._base)
        optimizer = build_optimizer(
            "alternate",
            adamw_groups(model, recipe.weight_decay),
            forget={"name": "adamw", "lr": recipe.lr},
            retain={"name": "adamw", "lr": recipe.lr, "betas": (0.9, 0.999)},
        )
        source = PairSource({"qa": pairs}, self.formatter.pad)
        per_epoch = -(-len(pairs) // recipe.batch_size) // recipe.accumulation or 1
        cfg = EngineConfig(
            Schedule(recipe.epochs, forget_steps=0),
            retain_batch=recipe.batch_size,
            accumulation=recipe.accumulation,
            retain=PhaseOptions(clip_norm=1.0),
            lr_schedule="linear",
            warmup_steps=per_epoch,
            seed=recipe.seed,
            progress=self.progress,
        )
        unlearn(model, FineTune(), None, source, optimizer, cfg)
        return full_state_dict(model)  # whole on every process, also when FSDP2 sharded it

    @cached_property
    def target(self) -> tuple[dict[str, Tensor], float]:
        return self._finetuned("target")

    @cached_property
    def retain_model(self) -> tuple[dict[str, Tensor], float]:
        return self._finetuned("retain")

    # ------------------------------------------------------------------ evaluation
    @property
    def _forget_files(self) -> tuple[str, str]:
        """The names of the forget split's evaluation file and training file, for errors."""
        split = self.exp.data.forget_split
        return f"{split}_perturbed", split

    def _forget_refusals(self) -> list[str]:
        """The refusal paired with each forget-evaluation question, for TFE: the one IDK
        methods train on for it (``refusal_pairs`` of the forget split, from index 0). Found
        by position: row i of ``forgetXX_perturbed`` is row i of ``forgetXX`` in TOFU and the
        built-in data, which is checked."""
        rows, trained = self.splits.evaluation["forget"][: self.exp.eval.limit], self.splits.forget
        evaluated, split = self._forget_files
        for i, row in enumerate(rows):
            if i >= len(trained) or row.question != trained[i].question:
                raise ValueError(
                    f"row {i} of {evaluated} is not row {i} of {split}: TFE pairs each "
                    "forget question with the refusal IDK methods train on for it, which "
                    "needs both files to hold the same questions in the same order"
                )
        seed = self.exp.data.refusal_seed
        return [refusal(i, seed) for i in range(len(rows))]

    def curve_evaluator(self) -> Callable[[nn.Module, RunState], dict[str, float]]:
        """Forget and retain Prob during unlearning (likelihoods only: no generation)."""
        b, limit = self.exp.eval.batch_size, self.exp.eval.limit

        def prob(model: nn.Module, role: str) -> float:
            rows = self.splits.evaluation[role][:limit]
            questions, answers = [r.question for r in rows], [r.answer for r in rows]
            return tofu.probability(mean_nll(model, self.formatter, questions, answers, b))

        def evaluate(model: nn.Module, _: RunState) -> dict[str, float]:
            return {f"{role}/prob": prob(model, role) for role in self.curve_roles}

        return evaluate

    def closer_look_models(self) -> CloserLookModels:
        return CloserLookModels(self.embedder, self.entailment, self.forget_refusals)

    def evaluate(self, model: nn.Module) -> Evaluation:
        models = self.closer_look_models()
        return evaluate_splits(model, self.formatter, self.splits.evaluation, self.exp.eval, models)

    def downstream(self, model: nn.Module) -> dict[str, float]:
        """``model``'s lm-eval numbers as metrics ``downstream/<task>`` and
        ``downstream/AVG``: none unless the config sets ``downstream``, and none once their
        data proved unavailable (offline), which ``downstream_unavailable`` then says."""
        options = getattr(self.exp, "downstream", None)
        if options is None or self.downstream_unavailable is not None:
            return {}
        try:
            values = evaluate_downstream(model, self.tokenizer, options, self.cache / "downstream")
        except DownstreamUnavailableError as err:
            self.downstream_unavailable = f"not available offline ({err})"
            return {}
        return {f"downstream/{task}": value for task, value in values.items()}

    def metrics(
        self,
        scores: dict[str, dict[str, float]],
        ratios: Any,
        idk: bool,
        model: Callable[[], nn.Module],
    ) -> dict[str, float]:
        """A model's row: the ``summary`` of its evaluation and, when the config sets them,
        its downstream numbers (only then, and while they are available, is ``model()``
        built)."""
        out = self.summary(scores, ratios, idk)
        if getattr(self.exp, "downstream", None) and self.downstream_unavailable is None:
            out.update(self.downstream(model()))
        return out

    def _cached_evaluation(self, which: str, state: dict[str, Tensor]) -> dict[str, Any]:
        e = self.exp
        parts = (self._model_keys[which], self.splits.evaluation, e.eval, e.embedder)
        key = fingerprint(*parts, *self.definitions)
        path = self.cache / f"eval-{which}-{key}.json"
        if path.exists():
            return read_json(path, ("scores", "forget_ratios", "generations"))
        evaluation = self.evaluate(self.new_model(state))
        saved = {
            "scores": evaluation.scores,
            "forget_ratios": evaluation.forget_ratios.tolist(),
            "generations": evaluation.generations,
        }
        write_json(path, saved)
        return saved

    @cached_property
    def retain_evaluation(self) -> dict[str, Any]:
        """The retain model's evaluation: Forget Quality's reference truth ratios."""
        return self._cached_evaluation("retain", self.retain_model[0])

    @cached_property
    def target_evaluation(self) -> dict[str, Any]:
        return self._cached_evaluation("target", self.target[0])

    def summary(self, scores: dict[str, dict[str, float]], ratios, idk: bool) -> dict[str, float]:
        """Every number of a row: FQ and MU (TOFU), the splits' scores, Closer-Look's."""
        out = {"model_utility": float(tofu.model_utility(scores))}
        if self.forget_quality:
            reference = np.asarray(self.retain_evaluation["forget_ratios"])
            out["forget_quality"] = float(tofu.forget_quality(np.asarray(ratios), reference))
        out.update({f"{s}/{k}": v for s, by in scores.items() for k, v in by.items()})
        look = self._closer_look(scores, idk)
        out.update({"UFE": look.ufe, "MU": look.mu, "OVR": look.ovr})
        if look.tfe is not None:
            out["TFE"] = look.tfe
        return out

    def _closer_look(self, scores: dict[str, dict[str, float]], idk: bool) -> cl.CloserLookScores:
        embedder = self.embedder.name if self.embedder is not None else None
        entailment = self.entailment.name if self.entailment is not None else None
        return cl.closer_look_scores(
            scores, idk=idk, embedder_name=embedder, entailment_name=entailment
        )

    def variant(self, idk: bool) -> str:
        return self._closer_look(self.target_evaluation["scores"], idk).variant


def _embedder(name: str) -> cl.Embedder:
    """``minilm``: the offline all-MiniLM-L6-v2; else a MiniLM sentence-transformers model by
    Hub id or folder."""
    return MiniLMEmbedder.offline() if name == "minilm" else MiniLMEmbedder(name)


def _load_model(key: str, name: str | None, load: Callable[[str], T]) -> T | None:
    """``load(name)``, or None when the config's ``key`` is null; a model that cannot be
    loaded is a ConfigError naming the key."""
    if name is None:
        return None
    try:
        return load(name)
    except (OSError, ImportError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"{key}: cannot load {name!r} ({reason}); give a local folder of the model, run "
            f"where the Hugging Face Hub is reachable, or set {key}: null (the report then "
            "names it absent)"
        ) from err
