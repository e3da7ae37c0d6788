"""Caches and records keyed by the content of the data, not its path (issue 13): a data file
replaced at the same path retrains what depends on it and makes new records, the same data
(at any path) reuses everything, and a cached model holds its build time in its own file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dualoptim.bench.sweeps import sweep
from dualoptim.io import cached_state, fingerprint, read_tensors
from dualoptim.tasks.images.train import TrainRecipe
from dualoptim.tasks.vision import experiment as vision_experiment
from dualoptim.tasks.vision import task as vision_task
from dualoptim.tasks.vision.config import DataSpec, UnlearnSpec, VisionExperiment


def write_images(path: Path, seed: int, classes: int = 3, train: int = 24, test: int = 8) -> Path:
    """A tiny npz: per class a bright row band on noise, so a CNN learns it in two epochs."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(0, 60, (classes * n, 8, 8))
        y = np.repeat(np.arange(classes), n)
        for c in range(classes):
            x[y == c, 2 * c : 2 * c + 2] = 255
        return x.astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = make(train), make(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def tiny_vision(npz: Path, cache: Path) -> VisionExperiment:
    return VisionExperiment(
        data=DataSpec(name=str(npz)),
        train=TrainRecipe(epochs=2, batch_size=32),
        runs=(UnlearnSpec("sfron", "dual", iterations=4, batch_size=16),),
        seeds=(0,),
        cache_dir=str(cache),
    )


def test_fingerprint_hashes_content_dtype_and_shape_not_identity() -> None:
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert fingerprint(x) == fingerprint(x.clone()) == fingerprint(x.t().t())
    assert fingerprint(x) != fingerprint(x.reshape(4, 3))  # same bytes, other shape
    assert fingerprint(x) != fingerprint(x.double())
    changed = x.clone()
    changed[2, 3] += 1
    assert fingerprint(x) != fingerprint(changed)
    assert fingerprint(x.numpy()) == fingerprint(x.numpy().copy())
    assert fingerprint(x[:, ::2]) == fingerprint(x[:, ::2].contiguous())  # views by content
    assert fingerprint(["a", "b"]) != fingerprint(["ab"])
    assert fingerprint(torch.zeros(2, dtype=torch.bfloat16)) != fingerprint(torch.zeros(2))
    assert len(fingerprint(x)) == 16


def test_cached_state_keeps_the_seconds_in_the_file_and_builds_once(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    built: list[int] = []
    shared = torch.ones(3)

    def build() -> dict[str, torch.Tensor]:
        built.append(1)
        return {"a": shared, "tied": shared, "b": torch.arange(4)}

    state, seconds = cached_state(path, build)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # one file, no sidecar
    again, seconds_again = cached_state(path, build)
    assert built == [1]
    assert seconds_again == seconds
    assert set(again) == {"a", "tied", "b"}
    assert torch.equal(again["b"], state["b"])
    assert read_tensors(path)[1] == {"seconds": repr(seconds)}


@pytest.mark.slow
def test_replacing_the_npz_at_the_same_path_retrains_and_reruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    npz = write_images(tmp_path / "set.npz", seed=0)
    exp = tiny_vision(npz, tmp_path / "cache")
    trained: list[int] = []
    runs: list[int] = []
    real_train, real_run = vision_experiment.train_classifier, vision_task.run_unlearning

    def train(model, source, recipe, seed, **kwargs):
        trained.append(len(source))
        return real_train(model, source, recipe, seed=seed, **kwargs)

    def run(*args):
        runs.append(1)
        return real_run(*args)

    monkeypatch.setattr(vision_experiment, "train_classifier", train)
    monkeypatch.setattr(vision_task, "run_unlearning", run)

    first = sweep(exp, tmp_path / "out")
    assert trained == [72, 65]  # the original (all rows), then RT (D_r)
    assert len(runs) == 1
    cache_files = set((tmp_path / "cache").iterdir())
    assert sum(p.name.startswith(("original-", "rt-")) for p in cache_files) == 3  # + RT's metrics

    trained.clear()
    runs.clear()
    again = sweep(exp, tmp_path / "out")  # the same data: everything reused
    assert trained == runs == []
    assert [r["id"] for r in again] == [r["id"] for r in first]
    assert set((tmp_path / "cache").iterdir()) == cache_files

    copy = tmp_path / "elsewhere" / "copy.npz"
    copy.parent.mkdir()
    shutil.copy(npz, copy)
    sweep(tiny_vision(copy, tmp_path / "cache"), tmp_path / "out-copy")
    assert trained == []  # the same content at another path: the cached models serve
    runs.clear()

    write_images(npz, seed=1)  # other images, same path, same config
    with pytest.raises(ValueError, match=rf"{tmp_path / 'out'} holds records made on other data"):
        sweep(exp, tmp_path / "out")
    assert trained == runs == []
    replaced = sweep(exp, tmp_path / "out-new")
    assert trained == [72, 65]  # retrained and rerun: nothing stale is read
    assert len(runs) == 1
    new_files = set((tmp_path / "cache").iterdir()) - cache_files
    assert sorted(p.name.split("-")[0] for p in new_files) == ["mask", "original", "rt", "rt"]
    assert {r["data"] for r in first} != {r["data"] for r in replaced}
    assert not {r["id"] for r in first} & {r["id"] for r in replaced}
    reference = next(r for r in replaced if r["kind"] == "reference")
    assert reference["data"] == vision_experiment.load_experiment_data(exp).fingerprint


def test_masks_and_rt_follow_the_forget_rows_and_rt_its_seed(tmp_path: Path) -> None:
    """Two seeds forgetting the same class share one forget set but not RT (its training
    seed differs); masks depend on the original model and the forget rows only."""
    npz = write_images(tmp_path / "set.npz", seed=0)
    exp = VisionExperiment(
        data=DataSpec(name=str(npz), forget_fraction=None, forget_classes=(1,)),
        train=TrainRecipe(epochs=1, batch_size=32),
        runs=(UnlearnSpec("sfron", "dual", iterations=2),),
        seeds=(0, 1),
        cache_dir=str(tmp_path / "cache"),
    )
    data = vision_experiment.load_experiment_data(exp)
    worlds = [vision_experiment.prepare(exp, seed, data) for seed in exp.seeds]
    assert worlds[0].mask_path("sfron", 16) == worlds[1].mask_path("sfron", 16)
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.safetensors"))
    assert names == ["original", "rt", "rt"]


def test_llm_model_keys_follow_the_rows_not_their_folder(tmp_path: Path) -> None:
    from dualoptim.tasks.llm.config import LLMExperiment, ModelSpec, TofuData
    from dualoptim.tasks.llm.generator import write_tofu
    from dualoptim.tasks.llm.models import TinySpec
    from dualoptim.tasks.llm.world import World

    def world(source: Path) -> World:
        tiny = TinySpec(vocab_size=300, hidden_size=16, intermediate_size=32)
        return World(
            LLMExperiment(
                data=TofuData(source=str(source), retain_rows=20),
                model=ModelSpec(tiny=tiny),
                cache_dir=str(tmp_path / "cache"),
            ),
            progress=False,
        )

    write_tofu(tmp_path / "a")
    write_tofu(tmp_path / "b")
    a, b = world(tmp_path / "a"), world(tmp_path / "b")
    assert a._model_keys == b._model_keys  # the same rows in another folder
    assert a.fingerprint == b.fingerprint

    forget = tmp_path / "b" / "forget01.json"
    lines = forget.read_text().splitlines()
    forget.write_text("\n".join([lines[0].replace('"answer": "', '"answer": "Not '), *lines[1:]]))
    changed = world(tmp_path / "b")
    assert changed._model_keys["target"] != a._model_keys["target"]
    assert changed.fingerprint != a.fingerprint
    assert changed.key != b.key  # its records get new ids


def test_diffusion_keys_follow_the_training_images(tmp_path: Path) -> None:
    from dualoptim.tasks.diffusion import world as diffusion
    from dualoptim.tasks.diffusion.config import DiffusionExperiment, GenDataSpec

    class CapturedError(Exception):
        pass

    def cache_names(npz: Path) -> list[str]:
        """The cache files the world would read or build, in order; nothing is trained."""
        exp = DiffusionExperiment(data=GenDataSpec(str(npz)), cache_dir=str(tmp_path / "c"))
        world = diffusion.World(exp, progress=False)
        names = [world.mask_path("sfron", 0).name, world.key, world.fingerprint]
        with pytest.MonkeyPatch.context() as patch:

            def capture(path: Path, _build) -> None:
                names.append(path.name)
                raise CapturedError

            patch.setattr(diffusion, "cached_state", capture)
            for build in (
                lambda: world.original,
                lambda: world.classifier,
                lambda: world.original_samples,
                lambda: world.fisher(10, 32),
            ):
                with pytest.raises(CapturedError):
                    build()
        return names

    npz = write_images(tmp_path / "set.npz", seed=0)
    before = cache_names(npz)
    shutil.copy(npz, tmp_path / "copy.npz")
    copy = cache_names(tmp_path / "copy.npz")
    assert copy[3:] == before[3:]  # the cached files, by content
    assert copy[0] == before[0]  # the mask
    assert copy[2] == before[2]  # the data's fingerprint (copy[1], the records' key, has the path)
    write_images(npz, seed=1)
    after = cache_names(npz)
    assert [a != b for a, b in zip(after, before, strict=True)] == [True] * len(before)
