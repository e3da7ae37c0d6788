"""Each classification method, on a tiny CNN and digits with class 3 forgotten, moves forget
accuracy toward the retrained model's (0% for a forgotten class); masks behave per SPEC §1.6."""

from __future__ import annotations

import copy

import pytest
import torch

from dualoptim.bench.sweeps import sweep
from dualoptim.cli import main
from dualoptim.optim.settings import build_optimizer
from dualoptim.tasks.images.loaders import load_data
from dualoptim.tasks.images.models import build_model
from dualoptim.tasks.images.train import (
    FT,
    ImageMethod,
    ImageSource,
    TrainRecipe,
    cross_entropy,
    train_classifier,
)
from dualoptim.tasks.vision import methods
from dualoptim.tasks.vision.config import DataSpec, UnlearnSpec, VisionExperiment
from dualoptim.tasks.vision.methods.ga import GA
from dualoptim.tasks.vision.methods.gradients import mean_gradients
from dualoptim.tasks.vision.methods.l1sparse import GAMMA, L1Sparse
from dualoptim.tasks.vision.methods.rl import RL
from dualoptim.tasks.vision.methods.salun import SalUn
from dualoptim.tasks.vision.methods.scrub import SCRUB
from dualoptim.tasks.vision.methods.sfron import SFRon
from dualoptim.tasks.vision.splits import make_forget_split
from dualoptim.unlearn import EngineConfig, PhaseOptions, RunState, Schedule, unlearn
from dualoptim.unlearn.masks import top_fraction_mask

FORGET = {"name": "adamw", "lr": 1e-2, "weight_decay": 0.05}
RETAIN = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


def accuracy(model: torch.nn.Module, source: ImageSource) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(source.x).argmax(1) == source.y).float().mean()) * 100


@pytest.fixture(scope="module")
def world():
    data = load_data("digits", per_class_train=80)
    split = make_forget_split(data.train, classes=[3])
    forget, retain = data.train.subset(split.forget), data.train.subset(split.retain)
    torch.manual_seed(0)
    original = build_model("cnn", in_channels=1, classes=10, image_size=8)
    train_classifier(original, ImageSource(data.train.x, data.train.y), TrainRecipe(epochs=6))
    return original, ImageSource(forget.x, forget.y), ImageSource(retain.x, retain.y)


def make(name: str, forget: ImageSource, retain: ImageSource):
    """(method, schedule, engine options) at a scale that runs in about a second."""
    return {
        "ft": (FT(), Schedule(3, forget_steps=0), {}),
        "ga": (GA(), Schedule(1, retain_steps=0), {}),
        "rl": (RL(len(forget), 10), Schedule(2), {}),
        "salun": (SalUn(len(forget), 10, forget=forget, retain=retain), Schedule(2), {}),
        "scrub": (SCRUB(), Schedule(5), {}),
        "sfron": (
            SFRon(forget=forget, retain=retain),
            Schedule(10, 1, 5),
            {"forget": PhaseOptions(clip_norm=7.0)},
        ),
    }[name]


CASES = [
    (method, setting)
    for method in ("ft", "ga", "rl", "salun", "scrub", "sfron")
    for setting in (
        ("alternate", "dual") if method in ("ft", "ga") else ("alternate", "dual", "dual_plus")
    )
]


@pytest.mark.parametrize(("method", "setting"), CASES)
def test_method_moves_forget_accuracy_toward_the_retrained_model(method, setting, world) -> None:
    original, forget, retain = world
    assert accuracy(original, forget) == 100.0
    model = copy.deepcopy(original)
    algo, schedule, options = make(method, forget, retain)
    opt = build_optimizer(
        setting,
        model.parameters(),
        forget=FORGET,
        retain=RETAIN,
        plus={"retain_lr": 1e-3, "compile": False} if setting == "dual_plus" else None,
    )
    config = EngineConfig(schedule, forget_batch=64, retain_batch=128, progress=False, **options)
    unlearn(model, algo, forget, retain, opt, config)
    fa = accuracy(model, forget)
    # FT only forgets by drifting (measured 91% after 3 epochs); the others unlearn directly
    assert fa < (97.0 if method == "ft" else 50.0)
    # GA destroys the retain set too. Under Alternate, SCRUB's max step on the shared SGD
    # momentum also collapses it (measured RA 11%) -- the instability DualOptim addresses;
    # the dual settings must keep it.
    if method != "ga" and setting != "alternate":
        assert accuracy(model, retain) > 60.0


def test_salun_masks_both_objectives_and_sfron_only_forget(world) -> None:
    original, forget, retain = world
    for algo, masked in (
        (SalUn(len(forget), 10, forget=forget, retain=retain), {"forget", "retain"}),
        (SFRon(forget=forget, retain=retain), {"forget"}),
    ):
        model = copy.deepcopy(original)
        opt = build_optimizer("dual", model.parameters(), forget=FORGET, retain=RETAIN)
        config = EngineConfig(Schedule(1), forget_batch=64, retain_batch=128, progress=False)
        frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
        unlearn(model, algo, forget, retain, opt, config)
        params = dict(model.named_parameters())
        with_mask = {o for o in ("forget", "retain") if opt.masks(o)}
        assert with_mask == masked
        if masked == {"forget", "retain"}:  # SalUn: masked weights never move
            for p, m in opt.masks("forget").items():
                name = next(n for n, q in params.items() if q is p)
                assert torch.equal(p.detach()[~m], frozen[name][~m])


def test_saliency_keeps_the_requested_fraction_globally() -> None:
    scores = {"a": torch.arange(10.0), "b": torch.arange(10.0, 20.0)}
    mask = top_fraction_mask(scores, 0.5)
    assert mask["a"].sum() == 0
    assert mask["b"].all()


def test_mean_gradients_are_the_mean_of_batch_gradients(world) -> None:
    original, forget, _ = world
    model = copy.deepcopy(original)
    batches = mean_gradients(model, forget, batch_size=len(forget), square=False)
    model.eval()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(forget.x), forget.y).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(batches[name], p.grad)


def test_sfron_forget_weights_favour_low_loss_samples_and_decay_alpha() -> None:
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    algo = SFRon(alpha=25.0)
    start = algo.forget_loss(model, (x, y, torch.arange(6)), RunState(total_steps=10, step=0))
    end = algo.forget_loss(model, (x, y, torch.arange(6)), RunState(total_steps=10, step=10))
    losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none").detach()
    c = 1 / losses.sqrt()
    expected = -25.0 * float((c / c.sum() * losses).sum())
    assert float(start.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(end.detach()) == pytest.approx(0.0, abs=1e-6)


def test_scrub_needs_setup_and_rl_labels_are_fixed_per_example() -> None:
    with pytest.raises(RuntimeError, match="setup was not run"):
        SCRUB().forget_loss(torch.nn.Linear(4, 3), (torch.randn(2, 4), None, None), None)
    rl = RL(forget_size=50, classes=10, seed=1)
    assert torch.equal(rl.labels, RL(forget_size=50, classes=10, seed=1).labels)
    assert int(rl.labels.max()) < 10


def test_masks_are_computed_once_per_model_and_forget_set(world, tmp_path, monkeypatch) -> None:
    original, forget, retain = world
    path = tmp_path / "mask.safetensors"

    def setup_salun() -> dict[str, torch.Tensor]:
        model = copy.deepcopy(original)
        opt = build_optimizer("dual", model.parameters(), forget=FORGET, retain=RETAIN)
        run = RunState(total_steps=1)
        SalUn(len(forget), 10, forget=forget, retain=retain, mask_cache=path).setup(model, opt, run)
        assert opt.masks("forget")  # installed whether computed or loaded
        return run.extras["mask"]

    computed = setup_salun()
    assert path.exists()

    def fail(*_args, **_kwargs):
        raise AssertionError("the cached mask should have been loaded")

    monkeypatch.setattr("dualoptim.tasks.vision.methods.salun.mean_gradients", fail)
    loaded = setup_salun()
    assert computed.keys() == loaded.keys()
    for name, mask in computed.items():
        assert torch.equal(mask, loaded[name])


def test_l1sparse_adds_gamma_times_the_l1_norm_and_gamma_decays_linearly_to_zero(world) -> None:
    original, _, retain = world
    batch = retain.batch(torch.arange(32))
    method = L1Sparse()
    run = RunState(total_steps=10, step=4)
    by_hand = sum(float(p.detach().abs().sum()) for p in original.parameters())
    with torch.no_grad():
        extra = method.retain_loss(original, batch, run) - cross_entropy(original, batch)
    assert float(extra) == pytest.approx(GAMMA * 0.6 * by_hand, rel=1e-4)
    gammas = [method.gamma_at(RunState(total_steps=10, step=s)) for s in range(11)]
    assert gammas[0] == GAMMA == 5e-4
    assert gammas[-1] == 0.0
    assert gammas == pytest.approx([GAMMA * (1 - s / 10) for s in range(11)])
    assert method.forget_loss(original, batch, run) is None  # no forget objective


def test_l1sparse_shrinks_weights_compared_with_ft_under_the_same_seed(world) -> None:
    original, forget, retain = world

    def l1_after(method) -> float:
        model = copy.deepcopy(original)
        opt = build_optimizer("alternate", model.parameters(), forget=RETAIN, retain=RETAIN)
        config = EngineConfig(Schedule(2, forget_steps=0), retain_batch=128, progress=False)
        unlearn(model, method, forget, retain, opt, config)
        return sum(float(p.detach().abs().sum()) for p in model.parameters())

    ft, sparse = l1_after(FT()), l1_after(L1Sparse())
    assert sparse < ft * 0.99  # the penalty, not noise: same seed, same batches


def test_l1sparse_runs_through_the_cli_with_its_default_step_size(tmp_path, capsys) -> None:
    args = [
        "unlearn",
        "--out",
        str(tmp_path / "out"),
        f"cache_dir={tmp_path / 'cache'}",
        "runs=[{method: l1sparse, setting: alternate, epochs: 1}]",
        "seeds=[0]",
        "train.epochs=2",
        "data.per_class_train=30",
        "data.per_class_test=10",
    ]
    assert main(args) == 0
    printed = " ".join(capsys.readouterr().out.split())  # the table may wrap the label
    assert "l1sparse" in printed
    assert "| l1sparse (alternate) |" in (tmp_path / "out" / "digits" / "report.md").read_text()
    spec = UnlearnSpec("l1sparse", "alternate")
    assert spec.effective_forget_lr == 0.01
    assert not spec.effective_per_phase_lr
    # every step is a retain step, taken at the shared SGD's one step size η_f = 0.01
    assert {"forget_lr", "epochs"} <= spec.used_options()
    assert "retain_lr" not in spec.used_options()
    with pytest.raises(ValueError, match="l1sparse under 'dual' has no tuned default"):
        UnlearnSpec("l1sparse", "dual")


class HalfAscent(ImageMethod):
    """A toy: half-strength gradient ascent on D_f, CE on D_r."""

    name = "half-ascent"

    def forget_loss(self, model, batch, _run):
        return -0.5 * cross_entropy(model, batch)

    def retain_loss(self, model, batch, _run):
        return cross_entropy(model, batch)


def test_a_method_registered_from_this_file_alone_runs_through_the_sweep(
    tmp_path, monkeypatch
) -> None:
    methods.names()  # the built-ins, before the registry is swapped for a copy
    monkeypatch.setattr(methods.REGISTRY, "entries", dict(methods.REGISTRY.entries))
    built = []

    def build(spec, _world, seed):
        built.append((spec.method, seed))
        return HalfAscent(), Schedule(spec.epochs), {}

    methods.register(methods.VisionMethod("half-ascent", build, forget_lr={"dual": 1e-3}))
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.VisionMethod("half-ascent", build, forget_lr={}))
    exp = VisionExperiment(
        data=DataSpec(per_class_train=30, per_class_test=10),
        train=TrainRecipe(epochs=2),
        runs=(UnlearnSpec("half-ascent", "dual", epochs=1),),
        seeds=(0,),
        cache_dir=str(tmp_path / "cache"),
    )
    records = sweep(exp, tmp_path / "out")
    runs = [r for r in records if r["kind"] == "run"]
    assert built == [("half-ascent", 0)]
    assert [(r["method"], r["setting"], r["forget_lr"], r["status"]) for r in runs] == [
        ("half-ascent", "dual", 1e-3, "finished")
    ]
    assert set(runs[0]["metrics"]) >= {"FA", "RA", "TA", "MIA"}
    assert list((tmp_path / "out" / "records").glob("*.json"))
