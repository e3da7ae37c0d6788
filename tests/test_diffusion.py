"""Class-conditional diffusion unlearning (SPEC §2.2): the DDPM objective and guided sampling
against hand-computed values, the methods' losses and masks, the configs, and a tiny U-Net
end to end on a toy data set it learns in seconds, where unlearning lowers FA."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from dualoptim.bench import task_report
from dualoptim.bench.split_table import split_columns, split_tables
from dualoptim.bench.sweeps import sweep
from dualoptim.bench.tables import markdown
from dualoptim.cli import main
from dualoptim.config import ConfigError, load_config
from dualoptim.io import record_id
from dualoptim.tasks.diffusion import methods as registry
from dualoptim.tasks.diffusion import run as grun
from dualoptim.tasks.diffusion import task as diffusion_task
from dualoptim.tasks.diffusion.config import (
    ClassifierSpec,
    DiffusionExperiment,
    EvalSpec,
    GenDataSpec,
    GenUnlearnSpec,
    TrainSpec,
)
from dualoptim.tasks.diffusion.data import (
    NoiseImages,
    class_split,
    load_generation_data,
    per_class,
    to_unit_range,
)
from dualoptim.tasks.diffusion.ddpm import (
    NoiseSchedule,
    SamplingSpec,
    denoising_losses,
    drop_labels,
    generate,
    guided_noise,
)
from dualoptim.tasks.diffusion.methods import DiffusionMethod
from dualoptim.tasks.diffusion.methods.base import DenoisingMethod, pseudo_labels
from dualoptim.tasks.diffusion.methods.sa import SelectiveAmnesia
from dualoptim.tasks.diffusion.methods.salun import SalUn
from dualoptim.tasks.diffusion.methods.sfron import SFRon
from dualoptim.tasks.diffusion.models import DenoiserSpec, build_denoiser
from dualoptim.tasks.diffusion.run import engine_config, make_optimizer, run_unlearning
from dualoptim.tasks.diffusion.world import World
from dualoptim.tasks.images.train import TrainRecipe
from dualoptim.unlearn import RunState
from dualoptim.unlearn.engine import Engine
from dualoptim.unlearn.losses import adaptive_ascent
from dualoptim.unlearn.task import record_config

CONFIGS = Path(__file__).parents[1] / "src" / "dualoptim" / "configs" / "diffusion"
TINY = DenoiserSpec(channels=(16, 32), norm_groups=8)


class Affine(nn.Module):
    """ε(x, t, c) = a·x + c: simple enough to compute losses and guidance by hand."""

    def __init__(self, a: float = 0.5, classes: int = 4) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.classes = classes

    @property
    def null_label(self) -> int:
        return self.classes

    def forward(self, x: Tensor, _t: Tensor, labels: Tensor) -> Tensor:
        return self.a * x + labels.float().view(-1, 1, 1, 1)


# ---------------------------------------------------------------------- the DDPM objective
def test_denoising_losses_equal_the_hand_computed_noise_prediction_error() -> None:
    scheduler = NoiseSchedule().ddpm()
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1
    labels = torch.tensor([0, 1, 2])
    torch.manual_seed(7)
    losses = denoising_losses(Affine(), scheduler, x0, labels)
    torch.manual_seed(7)  # the same draws, in the same order: t, then ε
    t = torch.randint(0, 1000, (3,))
    noise = torch.randn_like(x0)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)[t].float().view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    expected = (0.5 * x_t + labels.view(-1, 1, 1, 1) - noise).square().mean((1, 2, 3))
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-6)


def test_label_dropout_replaces_labels_by_the_empty_condition() -> None:
    labels = torch.zeros(20_000, dtype=torch.long)
    assert torch.equal(drop_labels(labels, 4, 0.0), labels)
    assert bool((drop_labels(labels, 4, 1.0) == 4).all())
    torch.manual_seed(0)
    share = float((drop_labels(labels, 4, 0.1) == 4).float().mean())
    assert 0.09 < share < 0.11


def test_guidance_is_one_plus_w_conditional_minus_w_empty() -> None:
    model, x = Affine(), torch.randn(2, 1, 3, 3)
    labels, t = torch.tensor([1, 3]), torch.tensor([5])
    w = 2.0
    conditional = 0.5 * x + labels.view(-1, 1, 1, 1)
    empty = 0.5 * x + 4.0
    expected = (1 + w) * conditional - w * empty
    torch.testing.assert_close(guided_noise(model, x, t, labels, w), expected)
    torch.testing.assert_close(guided_noise(model, x, t, labels, 0.0), conditional)


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_denoisers_take_the_empty_label_and_never_drop_labels_themselves(kind: str) -> None:
    torch.manual_seed(0)
    model = build_denoiser(replace(TINY, kind=kind), (1, 8, 8), 4).train()
    x, t = torch.randn(6, 1, 8, 8), torch.randint(0, 1000, (6,))
    labels = torch.tensor([0, 1, 2, 3, 4, 4])  # 4: the empty condition
    out = model(x, t, labels)
    assert out.shape == x.shape
    torch.testing.assert_close(model(x, t, labels), out)  # train mode, yet deterministic


def test_sampling_is_seeded_bounded_and_leaves_the_mode_alone() -> None:
    torch.manual_seed(0)
    model = build_denoiser(TINY, (1, 8, 8), 4).train()
    spec = SamplingSpec(steps=3, batch_size=4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    a = generate(model, labels, NoiseSchedule(), spec, seed=1)
    assert model.training
    assert a.shape == (5, 1, 8, 8)
    assert float(a.min()) >= -1
    assert float(a.max()) <= 1
    torch.testing.assert_close(generate(model, labels, NoiseSchedule(), spec, seed=1), a)
    assert not torch.equal(generate(model, labels, NoiseSchedule(), spec, seed=2), a)
    ddpm = replace(spec, sampler="ddpm")
    assert generate(model, labels, NoiseSchedule(), ddpm, seed=1).shape == a.shape
    with pytest.raises(ValueError, match="labels must lie"):
        generate(model, torch.tensor([4]), NoiseSchedule(), spec)
    with pytest.raises(ValueError, match="no labels"):
        generate(model, torch.tensor([], dtype=torch.long), NoiseSchedule(), spec)


def test_architecture_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="multiples of norm_groups"):
        DenoiserSpec(channels=(12, 32), norm_groups=8)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_denoiser(DenoiserSpec(channels=(8, 16, 16)), (1, 10, 10), 4)
    with pytest.raises(ValueError, match="patch_size"):
        build_denoiser(DenoiserSpec(kind="dit", patch_size=3), (1, 8, 8), 4)


# ---------------------------------------------------------------------- data
def test_class_split_and_noise_images() -> None:
    data = load_generation_data("digits", image_size=16)
    assert data.image_shape == (1, 16, 16)
    assert float(data.train.x.min()) >= 0
    assert float(data.train.x.max()) <= 1
    forget, retain = class_split(data.train, 3)
    assert len(forget) + len(retain) == len(data.train)
    assert bool((forget.y == 3).all())
    assert not bool((retain.y == 3).any())
    assert float(forget.x.min()) >= -1
    assert float(forget.x.min()) < 0
    noise = NoiseImages(10, 3, (1, 16, 16))
    x, y, _ = noise.batch(torch.arange(4))
    assert x.shape == (4, 1, 16, 16)
    assert bool((y == 3).all())
    assert float(x.min()) >= -1
    assert float(x.max()) <= 1
    assert float(x.std()) > 0.4
    with pytest.raises(ValueError, match="not a class"):
        data.check_class(10)
    picked = per_class(data.test, [1, 2], 5)
    assert picked.y.tolist() == [1] * 5 + [2] * 5
    torch.testing.assert_close(
        to_unit_range(torch.tensor([-3.0, 0.0, 1.0])), torch.tensor([0, 0.5, 1])
    )


# ---------------------------------------------------------------------- methods
def test_pseudo_labels_are_any_class_but_the_forgotten_one() -> None:
    torch.manual_seed(0)
    drawn = pseudo_labels(torch.full((4000,), 2), 5)
    assert not bool((drawn == 2).any())
    assert sorted(drawn.unique().tolist()) == [0, 1, 3, 4]


def test_adaptive_ascent_matches_hand_computed_weights() -> None:
    losses = torch.tensor([1.0, 4.0], requires_grad=True)
    # c = 1/sqrt(l) = (1, 0.5); w = (2/3, 1/3); -α·(2/3·1 + 1/3·4) = -2α
    loss = adaptive_ascent(losses, lam=0.5, alpha=3.0)
    assert math.isclose(float(loss.detach()), -6.0, rel_tol=1e-6)
    loss.backward()  # the weights are constants: d/dl_i = -α·w_i
    torch.testing.assert_close(losses.grad, torch.tensor([-2.0, -1.0]))


def test_selective_amnesia_penalty_is_the_fisher_weighted_distance() -> None:
    torch.manual_seed(0)
    model = build_denoiser(TINY, (1, 8, 8), 4)
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    sa = SelectiveAmnesia(NoiseSchedule().ddpm(), fisher=fisher, gamma=1.0, lam=10.0)
    sa.setup(model, None, RunState(1))
    assert float(sa.penalty(model).detach()) == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    expected = sum(float(f.sum()) * 1e-4 for f in fisher.values())
    assert math.isclose(float(sa.penalty(model).detach()), expected, rel_tol=1e-4)
    partial = dict(list(fisher.items())[1:])
    with pytest.raises(ValueError, match="Fisher lacks"):
        SelectiveAmnesia(NoiseSchedule().ddpm(), fisher=partial).setup(model, None, RunState(1))


def _one_step(model, method, optimizer, objective, batch) -> dict[str, Tensor]:
    """One optimizer step of ``objective``; returns the weights before it."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss_fn = method.forget_loss if objective == "forget" else method.retain_loss
    optimizer.zero_grad()
    loss_fn(model, batch, RunState(10)).backward()
    optimizer.objective = objective
    optimizer.step()
    return before


@pytest.mark.parametrize(
    ("name", "frozen_in"), [("salun", {"forget", "retain"}), ("sfron", {"forget"})]
)
def test_masked_weights_never_move_in_the_masked_objectives(name: str, frozen_in: set) -> None:
    """SalUn's mask freezes weights in both objectives, SFR-on's only in forget steps."""
    torch.manual_seed(0)
    data = load_generation_data("digits")
    forget, retain = class_split(data.train, 0)
    model = build_denoiser(TINY, data.image_shape, 10)
    schedule = NoiseSchedule().ddpm()
    options = {"batch_size": 16, "mask_batches": 2}
    if name == "salun":
        method = SalUn(schedule, forget=forget, **options)
    else:
        method = SFRon(schedule, forget=forget, retain=retain, **options)
    spec = GenUnlearnSpec(name, "dual", forget_lr=1e-2)
    optimizer = make_optimizer(spec, model)
    run = RunState(10)
    method.setup(model, optimizer, run)
    masks = run.extras["mask"]
    frozen = sum(int((~m).sum()) for m in masks.values())
    assert 0 < frozen < sum(m.numel() for m in masks.values())
    for objective, source in (("forget", forget), ("retain", retain)):
        before = _one_step(model, method, optimizer, objective, source.batch(torch.arange(16)))
        for n, p in model.named_parameters():
            moved = p.detach() != before[n]
            if objective in frozen_in:
                assert not bool(moved[~masks[n]].any()), f"{n} moved in a {objective} step"
            else:
                assert bool(moved.any())


# ---------------------------------------------------------------------- configs
def test_the_registry_holds_each_method_once_with_its_published_defaults() -> None:
    assert registry.names() == ("sa", "salun", "sfron")
    published = {m: registry.get(m).setting for m in registry.names()}
    assert published == {"sa": "joint", "salun": "joint", "sfron": "alternate"}
    assert [registry.get(m).alpha for m in registry.names()] == [None, None, (10.0, 1.0)]
    with pytest.raises(ValueError, match="'sfron' is already registered"):
        registry.register(registry.get("sfron"))


def test_run_specs_resolve_the_published_defaults() -> None:
    sa, salun, sfron = GenUnlearnSpec("sa"), GenUnlearnSpec("salun"), GenUnlearnSpec("sfron")
    assert (sa.label, sa.resolved_setting, sa.steps, sa.effective_forget_lr) == (
        "SA",
        "joint",
        20_000,
        1e-4,
    )
    assert (salun.resolved_setting, salun.effective_forget_lr, salun.steps, salun.c_r) == (
        "joint",
        1e-5,
        1000,
        1e-3,
    )
    assert (sfron.resolved_setting, sfron.steps, sfron.sfron_alpha) == ("alternate", 150, 10.0)
    do = GenUnlearnSpec("sfron", "dual")
    assert (do.label, do.sfron_alpha, do.c_r) == ("SFR-on+DO", 1.0, 1.0)
    assert GenUnlearnSpec("salun", "dual").c_r == 1.0
    assert GenUnlearnSpec("sa", "dual_plus").label == "SA+DO+"
    assert GenUnlearnSpec("sfron", "joint").label == "SFR-on (joint)"
    assert GenUnlearnSpec("sfron", "dual", alpha=10).label == "SFR-on+DO α=10"
    assert GenUnlearnSpec("sfron", "dual", alpha=1).label == "SFR-on+DO"
    assert GenUnlearnSpec("sa", alpha=3).label == "SA"  # a method without α shows none
    assert engine_config(sa, 0, False).joint
    assert not engine_config(do, 0, False).joint
    assert engine_config(do, 0, False).schedule.cycle(9, 9) == [("forget", 1), ("retain", 1)]


#: What make_optimizer built for each setting before the settings applied the η_f/η_r rule
#: themselves (values recorded from that code): the optimizer, its inner optimizer or DO+'s
#: state bits, and the η_r it used for SA at η_f 2e-4, η_r 3e-5 (shared settings: η_f).
@pytest.mark.parametrize(
    ("setting", "kind", "inner", "bits", "eta_r"),
    [
        ("joint", "SharedOptimizer", "Adam", None, 2e-4),
        ("alternate", "SharedOptimizer", "Adam", None, 2e-4),
        ("dual", "DualOptimizer", "Adam", None, 3e-5),
        ("dual_8bit", "DualOptimizer", "Adam8bit", None, 3e-5),
        ("dual_plus", "DualOptimPlus", None, 32, 3e-5),
        ("dual_plus_8bit", "DualOptimPlus", None, 8, 3e-5),
    ],
)
def test_each_setting_builds_the_optimizer_it_always_built(
    setting: str, kind: str, inner: str | None, bits: int | None, eta_r: float
) -> None:
    model = nn.Linear(3, 2)
    explicit = GenUnlearnSpec("sa", setting, forget_lr=2e-4, retain_lr=3e-5)
    default = GenUnlearnSpec("salun", setting)  # η_r unset: η_f, the published 1e-5
    for spec, (eta_f, expected_eta_r) in ((explicit, (2e-4, eta_r)), (default, (1e-5, 1e-5))):
        optimizer = make_optimizer(spec, model)
        assert type(optimizer).__name__ == kind
        (group,) = optimizer.param_groups
        hyper = {k: v for k, v in group.items() if k != "params"}
        steps = {"lr": 1.0, "forget_lr": eta_f, "retain_lr": expected_eta_r}
        if inner is None:  # DO+ with its own defaults: nothing else passed
            plus = {"betas": (0.9, 0.95), "base_betas": (0.9, 0.95), "eps": 1e-8}
            plus |= {"weight_decay": 0.0, "alpha": 1.0, "min_8bit_size": 4096}
            assert hyper == {**steps, **plus, "state_bits": bits, "bound_update": True}
            continue
        assert hyper == steps
        shared = optimizer.inner["forget"] is optimizer.inner["retain"]
        assert shared == (kind == "SharedOptimizer")
        for objective, lr in (("forget", eta_f), ("retain", expected_eta_r)):
            assert type(optimizer.inner[objective]).__name__ == inner
            (inner_group,) = optimizer.inner[objective].param_groups
            assert (inner_group["lr"], inner_group["betas"], inner_group["eps"]) == (
                lr,
                (0.9, 0.999),
                1e-8,
            )
            assert inner_group["weight_decay"] == 0


def test_per_phase_lr_gives_alternate_dos_step_sizes_and_its_own_row() -> None:
    def step_sizes(spec: GenUnlearnSpec) -> tuple[float, float]:
        optimizer = make_optimizer(spec, nn.Linear(3, 2))
        return optimizer.lr_of("forget"), optimizer.lr_of("retain")

    published = GenUnlearnSpec("sfron", forget_lr=1e-4, retain_lr=3e-5)  # Alternate
    per_phase, one = replace(published, per_phase_lr=True), replace(published, per_phase_lr=False)
    assert step_sizes(published) == step_sizes(one) == (1e-4, 1e-4)
    assert step_sizes(per_phase) == step_sizes(replace(published, setting="dual")) == (1e-4, 3e-5)
    assert [s.label for s in (published, per_phase, one)] == [
        "SFR-on",
        "SFR-on (alternate, per-phase η)",
        "SFR-on (alternate, one η)",
    ]
    sa = GenUnlearnSpec("sa", "alternate", per_phase_lr=True)
    assert sa.label == "SA (alternate, per-phase η)"
    # unset: the id as before per_phase_lr existed, and records without it
    assert (
        record_id("diffusion-run", "key", GenUnlearnSpec("sfron"), 0, 0) == "b90cae30b1c73be9cffc"
    )
    ids = {record_id("diffusion-run", "key", s, 0, 0) for s in (published, per_phase, one)}
    assert len(ids) == 3
    exp = DiffusionExperiment(runs=(published, per_phase))
    recorded = [record_config(exp, s, 0)["runs"][0] for s in exp.runs]
    assert "per_phase_lr" not in recorded[0]
    assert recorded[1]["per_phase_lr"] is True
    # SA's published setting is Joint: per_phase_lr needs setting: alternate
    with pytest.raises(
        ConfigError,
        match=r"runs\[0\]: per_phase_lr applies to the 'alternate' setting only, and sa runs "
        r"under 'joint': remove per_phase_lr, or set setting: alternate",
    ):
        load_config(DiffusionExperiment, None, ["runs=[{method: sa, per_phase_lr: true}]"])


def test_bad_configs_fail_early_with_the_key_named(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="unknown diffusion method 'ga': registered are sa, salun, sfron"
    ):
        GenUnlearnSpec("ga")
    with pytest.raises(ValueError, match="forget_classes is empty"):
        GenDataSpec(forget_classes=())
    with pytest.raises(ValueError, match="grid_per_class"):
        EvalSpec(forget_images=4, grid_per_class=8)
    with pytest.raises(ValueError, match=r"eval\.forget_images"):
        EvalSpec(forget_images=1, grid_per_class=1)  # no FID of the forgotten class from one
    path = tmp_path / "bad.yaml"
    path.write_text("task: diffusion\nruns: [{method: sfron, forget_lr: -1}]\n")
    with pytest.raises(ConfigError, match="forget_lr must be > 0"):
        load_config(DiffusionExperiment, path)
    exp = DiffusionExperiment(data=GenDataSpec("digits", forget_classes=(12,)))
    with pytest.raises(ValueError, match="forget class 12"):
        World(exp, progress=False)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_load(path: Path) -> None:
    exp = load_config(DiffusionExperiment, path)
    assert exp.task == "diffusion"
    assert exp.runs


# ---------------------------------------------------------------------- end to end
def _toy(path: Path, per_class_count: int = 64, test: int = 32) -> None:
    """Four classes a tiny model learns in seconds: a bright quadrant on a dark background."""
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for c in range(4):
            x = rng.integers(0, 40, (n, 8, 8))
            r, q = divmod(c, 2)
            x[:, r * 4 : (r + 1) * 4, q * 4 : (q + 1) * 4] = rng.integers(200, 256, (n, 4, 4))
            xs.append(x)
            ys.append(np.full(n, c))
        return np.concatenate(xs).astype(np.uint8), np.concatenate(ys)

    x_train, y_train = make(per_class_count)
    x_test, y_test = make(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "quadrants.npz"
    _toy(path)
    return path


@pytest.fixture(scope="module")
def toy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: the toy original and classifier are trained once."""
    return tmp_path_factory.mktemp("toy-cache")


def _toy_experiment(
    toy: Path, cache: Path, runs: tuple[GenUnlearnSpec, ...]
) -> DiffusionExperiment:
    return DiffusionExperiment(
        data=GenDataSpec(str(toy), forget_classes=(0,)),
        model=TINY,
        train=TrainSpec(iterations=200, lr=3e-3, batch_size=32),
        classifier=ClassifierSpec(train=TrainRecipe(epochs=3, batch_size=32)),
        eval=EvalSpec(
            sampling=SamplingSpec(steps=10),
            forget_images=32,
            images_per_class=16,
            real_per_class=16,
            grid_per_class=4,
        ),
        runs=runs,
        cache_dir=str(cache),
    )


def test_unlearning_a_class_lowers_its_forget_accuracy_end_to_end(
    toy: Path, toy_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = GenUnlearnSpec("sfron", "dual", iterations=30, batch_size=32, forget_lr=3e-3)
    exp = _toy_experiment(toy, toy_cache, (run,))
    out = tmp_path / "out"
    records = sweep(exp, out)
    reference, result = records
    assert reference["group"] == "original"
    assert result["group"] == "SFR-on+DO"
    assert reference["metrics"]["FA"] >= 90  # the original draws the class
    assert reference["extra"]["classifier_accuracy"] >= 90
    assert result["metrics"]["FA"] <= reference["metrics"]["FA"] - 50  # and forgets it
    # and its samples of the class move away from the real ones
    assert result["metrics"]["FID_forgotten"] > reference["metrics"]["FID_forgotten"]
    assert result["metrics"]["steps/forget"] == 30
    assert result["metrics"]["steps/retain"] == 30
    assert math.isfinite(result["metrics"]["FID"])
    assert result["metrics"]["FID"] > 0
    for record in records:
        assert (out / record["extra"]["grid"]).stat().st_size > 1000
    assert result["extra"]["grid"] == "grids/sfr-on-do-lr0-003-class0-seed0.png"  # η_f in it
    # a rerun reads the records back instead of running again
    monkeypatch.setattr(diffusion_task, "run_unlearning", lambda *_, **__: pytest.fail("reran"))
    assert [r["id"] for r in sweep(exp, out)] == [r["id"] for r in records]
    # Table 2's layout: a column pair per forgotten class, the original first
    (header, cells), (average_header, _), table_csv = split_tables(records, diffusion_task.LAYOUT)
    table2 = markdown(header, cells)
    assert "0 FA ↓" in header
    assert "0 FID ↓" in header
    with_inception = {**result, "metrics": {**result["metrics"], "FID_inception": 100.0}}
    assert (
        split_columns([with_inception], diffusion_task.LAYOUT)[1]["0/FID_inception"]
        == "0 FID-Inception ↓"
    )
    assert [c[0] for c in cells] == ["original", "SFR-on+DO"]
    assert table2.splitlines()[2].startswith("| original")
    assert "SFR-on+DO" in table2
    assert "remaining classes recognised (%)" in average_header
    assert table_csv.splitlines()[0].startswith("group,kind")
    # a run that has not yet forgotten every class gets no average, not one over fewer classes
    extra = {**reference["extra"], "forget_class": 1, "class_name": "1"}
    other_class = {**reference, "id": "ref-1", "extra": extra}
    _, (_, partial_cells), _ = split_tables([*records, other_class], diffusion_task.LAYOUT)
    assert partial_cells[0][2] != "–"  # the original has both classes
    assert set(partial_cells[1][2:-2]) == {"–"}  # SFR-on+DO has one
    twin = {**result, "id": "twin"}  # another run under the same label: refused, not merged
    with pytest.raises(ValueError, match="would share a row"):
        split_tables([*records, twin], diffusion_task.LAYOUT)
    # the report rebuilds from the records alone
    task_report.report(diffusion_task.TASK, records, out, "toy")
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "FA ↓" in report
    assert "](grids/" in report


class KilledError(Exception):
    pass


class _AscentOnly(DenoisingMethod):
    """Gradient ascent on the forgotten class's DDPM loss: a method defined in a test."""

    def forget_loss(self, model, batch, _run):
        return -self.ddpm(model, batch)


def _build_ascent(spec: GenUnlearnSpec, world: World, forgotten: int):
    forget, retain = class_split(world.data.train, forgotten)
    return _AscentOnly(world.scheduler, label_dropout=spec.label_dropout), forget, retain


def test_a_method_registered_from_a_test_file_runs_with_its_own_defaults(
    toy: Path, toy_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a method is one registration: no table elsewhere names it."""
    monkeypatch.setattr(
        registry.REGISTRY, "entries", {n: registry.get(n) for n in registry.names()}
    )
    registry.register(
        DiffusionMethod("ascent", "Ascent", _build_ascent, "alternate", 2e-3, iterations=3)
    )
    spec = GenUnlearnSpec("ascent", batch_size=32)
    assert (spec.resolved_setting, spec.effective_forget_lr, spec.steps, spec.label) == (
        "alternate",
        2e-3,
        3,
        "Ascent",
    )
    _, result = sweep(_toy_experiment(toy, toy_cache, (spec,)), tmp_path / "out")
    assert (result["group"], result["method"], result["forget_lr"]) == ("Ascent", "ascent", 2e-3)
    steps = {k: v for k, v in result["metrics"].items() if k.startswith("steps/")}
    assert steps == {"steps/forget": 3, "steps/retain": 3, "steps/joint": 0}


def test_a_killed_unlearning_run_resumes_to_the_same_result(
    toy: Path, toy_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = GenUnlearnSpec("sa", "dual", iterations=4, batch_size=16, replay_per_class=8)
    world = World(_toy_experiment(toy, toy_cache, (run,)), progress=False)
    monkeypatch.setattr(grun, "CHECKPOINT_EVERY", 3)
    whole = run_unlearning(run, world, 0, seed=1)

    save = Engine.save_checkpoint

    def save_then_die(engine: Engine) -> None:
        save(engine)
        raise KilledError

    checkpoints = tmp_path / "run"
    monkeypatch.setattr(Engine, "save_checkpoint", save_then_die)
    with pytest.raises(KilledError):
        run_unlearning(run, world, 0, seed=1, checkpoint_dir=checkpoints)
    assert torch.load(checkpoints / "checkpoint.pt", weights_only=True)["step"] == 3
    monkeypatch.setattr(Engine, "save_checkpoint", save)
    resumed = run_unlearning(run, world, 0, seed=1, checkpoint_dir=checkpoints)
    assert resumed["resumed_from_step"] == 3
    assert resumed["metrics"] == whole["metrics"]  # bit-identical weights, same samples
    assert resumed["steps"] == whole["steps"]
    assert not checkpoints.exists()  # removed once the run is measured


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar10-ddpm", "cifar10-dit"])
def test_paper_configs_make_one_step_of_each_run_on_a_tiny_input(
    name: str, toy: Path, tmp_path: Path
) -> None:
    """Each paper-size run (method, setting, step sizes, clipping, weights) makes one forget
    and one retain step; only the data, the model's size and the lengths are shrunk."""
    exp = load_config(DiffusionExperiment, CONFIGS / f"{name}.yaml")
    small = {"channels": (16, 32), "attention": None, "norm_groups": 8, "layers": 1, "heads": 2}
    small_model = replace(exp.model, head_dim=8, **small)
    runs = tuple(
        replace(
            r, iterations=1, batch_size=8, replay_per_class=2, fisher_per_class=2, mask_batches=1
        )
        for r in exp.runs
    )
    tiny = _toy_experiment(toy, tmp_path / "cache", runs)
    tiny = replace(
        tiny,
        model=small_model,
        train=replace(tiny.train, iterations=2),
        eval=replace(
            tiny.eval,
            sampling=replace(exp.eval.sampling, steps=2, batch_size=64),
            inception=exp.eval.inception,
            inception_per_class=2,
        ),
        classifier=replace(exp.classifier, train=replace(exp.classifier.train, epochs=1)),
    )
    records = sweep(tiny)
    assert ("FID_inception" in records[0]["metrics"]) == exp.eval.inception
    assert [r["group"] for r in records[1:]] == [r.label for r in exp.runs]
    for record, spec in zip(records[1:], exp.runs, strict=True):
        steps = record["metrics"]
        expected = (
            {"joint": 1.0} if spec.optimizer_setting.joint else {"forget": 1.0, "retain": 1.0}
        )
        assert {k[6:]: v for k, v in steps.items() if k.startswith("steps/") and v} == expected


def test_the_cli_finds_diffusion_configs_and_refuses_what_they_lack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["retrain", "--config", "digits-ddpm"])
    assert exit_info.value.code == 2
    assert "no retrained reference" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tune", "--config", "digits-ddpm"])
    assert "diffusion tables have no Gap: use bench --grid" in capsys.readouterr().err
