"""Bad data files and damaged caches (issue 13): each is a ValueError (or FileNotFoundError)
raised early, whose message names the file or the key and says what to do, and none of
them changes an existing cache or result file."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dualoptim.bench.sweeps import sweep
from dualoptim.io import cached_state, read_json, write_tensors
from dualoptim.tasks.images.loaders import load_data
from dualoptim.tasks.llm.data import load_split
from dualoptim.tasks.llm.generator import write_tofu
from dualoptim.tasks.vision import experiment as vision
from dualoptim.tasks.vision.config import VisionExperiment
from test_content_caches import tiny_vision, write_images

Snapshot = dict[Path, tuple[bytes, int]]


def snapshot(*folders: Path) -> Snapshot:
    """Every file under ``folders`` with its bytes and modification time."""
    return {
        p: (p.read_bytes(), p.stat().st_mtime_ns)
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(
    call: Callable[[], object], *folders: Path, names: str, error: type[Exception] = ValueError
) -> str:
    """Run ``call``, expecting ``error`` whose message contains ``names``; the files under
    ``folders`` must be byte-for-byte and mtime-for-mtime as they were. Returns the message."""
    before = snapshot(*folders)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert names in message
    assert snapshot(*folders) == before
    return message


# --- npz data --------------------------------------------------------------------------------


def npz(path: Path, y_train: np.ndarray, **extra: np.ndarray) -> Path:
    x = np.zeros((len(y_train), 4, 4), np.uint8)
    np.savez(path, x_train=x, y_train=y_train, **extra)
    return path


LABELS = np.arange(40) % 10


def test_a_stray_label_is_refused_with_its_value_and_row_count(tmp_path: Path) -> None:
    labels = LABELS.copy()
    labels[[3, 17]] = 1000
    path = npz(tmp_path / "stray.npz", labels)
    message = refused(lambda: load_data(str(path)), tmp_path, names=str(path))
    assert "label 1000 (2 rows)" in message
    assert "no row has label 10" in message
    assert "declare the class count" in message


def test_a_stray_label_beyond_a_declared_class_count_is_refused(tmp_path: Path) -> None:
    labels = LABELS.copy()
    labels[5] = 1000
    path = npz(tmp_path / "declared.npz", labels, classes=np.array(10))
    message = refused(lambda: load_data(str(path)), tmp_path, names=str(path))
    assert re.search(r"y_train \(classes = 10\): labels must lie in \[0, 10\)", message)
    assert "label 1000 (1 row)" in message


def test_a_negative_label_is_refused(tmp_path: Path) -> None:
    path = npz(tmp_path / "negative.npz", LABELS - 1)
    message = refused(lambda: load_data(str(path)), tmp_path, names=str(path))
    assert "y_train has negative labels (minimum -1) in 4 rows" in message


def test_labels_leaving_a_class_empty_need_a_declared_class_count(tmp_path: Path) -> None:
    gappy = np.where(LABELS == 4, 9, LABELS)  # no class 4
    path = npz(tmp_path / "gap.npz", gappy)
    message = refused(lambda: load_data(str(path)), tmp_path, names=str(path))
    assert "no row has label 4 while y_train has label 5 (4 rows)" in message
    declared = npz(tmp_path / "gap-declared.npz", gappy, classes=np.array(10))
    assert load_data(str(declared)).train.classes == 10  # allowed once declared


def test_a_test_label_outside_the_training_classes_is_refused(tmp_path: Path) -> None:
    x = np.zeros((2, 4, 4), np.uint8)
    path = npz(tmp_path / "test.npz", LABELS, x_test=x, y_test=np.array([0, 12]))
    message = refused(lambda: load_data(str(path)), tmp_path, names=str(path))
    assert "y_test has label 12 (1 row)" in message


def test_a_class_count_that_is_not_one_integer_is_refused(tmp_path: Path) -> None:
    path = npz(tmp_path / "classes.npz", LABELS, classes=np.array([10.0, 2.0]))
    message = refused(lambda: load_data(str(path)), tmp_path, names=str(path))
    assert "classes must be one integer" in message


@pytest.mark.parametrize(
    "content", [b"not an archive", b"PK\x03\x04 cut short"], ids=["garbage", "truncated"]
)
def test_a_corrupt_npz_is_named(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "corrupt.npz"
    path.write_bytes(content)
    message = refused(lambda: load_data(str(path)), tmp_path, names=str(path))
    assert "not an .npz archive" in message
    assert "numpy.savez" in message


def test_an_npz_missing_its_labels_is_named_with_the_key(tmp_path: Path) -> None:
    path = tmp_path / "nolabels.npz"
    np.savez(path, x_train=np.zeros((4, 2, 2), np.uint8))
    message = refused(lambda: load_data(str(path)), tmp_path, names=str(path))
    assert "needs arrays x_train and y_train" in message


def test_an_npz_of_pickled_objects_is_named_with_the_key(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x_train=np.array([{"image": 1}], dtype=object), y_train=np.zeros(1, int))
    message = refused(lambda: load_data(str(path)), tmp_path, names=str(path))
    assert "array 'x_train' is not a readable plain array" in message


def test_a_missing_npz_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.npz"
    refused(lambda: load_data(str(path)), tmp_path, names=str(path), error=FileNotFoundError)


def test_idx_labels_beyond_ten_classes_are_named(tmp_path: Path) -> None:
    from test_images_data import IDX_STEMS, idx_arrays, write_idx

    arrays = idx_arrays()
    arrays[IDX_STEMS[1]][0] = 10
    for stem, array in arrays.items():
        write_idx(tmp_path / stem, array)
    labels = tmp_path / IDX_STEMS[1]
    message = refused(lambda: load_data("mnist", tmp_path), tmp_path, names=str(labels))
    assert "labels must lie in [0, 10), found label 10 (1 row)" in message


# --- vision caches ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(npz, cache) with the original model, RT and RT's metrics of seed 0 cached."""
    root = tmp_path_factory.mktemp("vision")
    path = write_images(root / "set.npz", seed=0)
    vision.prepare(tiny_vision(path, root / "cache"), 0)
    return path, root / "cache"


@pytest.fixture
def vision_cache(trained: tuple[Path, Path], tmp_path: Path) -> tuple[VisionExperiment, Path]:
    """A copy of the trained cache (mtimes kept) this test may damage."""
    path, cache = trained
    shutil.copytree(cache, tmp_path / "cache")
    return tiny_vision(path, tmp_path / "cache"), tmp_path / "cache"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow  # trains (compiles) a model, or imports diffusers
def test_a_truncated_cached_original_model_is_named(vision_cache) -> None:
    exp, cache = vision_cache
    (model,) = cache.glob("original-*.safetensors")
    truncate(model)
    message = refused(lambda: vision.prepare(exp, 0), cache, names=str(model))
    assert "delete it to rebuild it" in message


@pytest.mark.slow  # trains (compiles) a model, or imports diffusers
def test_a_truncated_cached_rt_model_is_named(vision_cache) -> None:
    exp, cache = vision_cache
    (model,) = cache.glob("rt-*.safetensors")
    truncate(model)
    data = vision.load_experiment_data(exp)
    split = vision.forget_split(exp, data, 0)
    message = refused(lambda: vision.retrained_model(exp, data, split, 0), cache, names=str(model))
    assert "truncated or not a dualoptim safetensors file" in message


@pytest.mark.slow  # trains (compiles) a model, or imports diffusers
def test_a_truncated_rt_metrics_file_is_named(vision_cache) -> None:
    exp, cache = vision_cache
    (metrics,) = cache.glob("rt-*.metrics-*.json")
    truncate(metrics)
    message = refused(lambda: vision.prepare(exp, 0), cache, names=str(metrics))
    assert "delete it to rebuild it" in message


@pytest.mark.slow  # trains (compiles) a model, or imports diffusers
def test_a_records_folder_made_on_other_data_is_refused(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    path = write_images(tmp_path / "set.npz", seed=0)
    shutil.copytree(trained[1], tmp_path / "cache")
    exp, out = tiny_vision(path, tmp_path / "cache"), tmp_path / "out"
    sweep(exp, out)
    write_images(path, seed=2)  # the same path and config, other images
    message = refused(lambda: sweep(exp, out), out, tmp_path / "cache", names=str(out))
    assert "holds records made on other data" in message
    assert "use another --out" in message


# --- other caches ----------------------------------------------------------------------------


def test_a_cached_state_without_its_time_is_named(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    write_tensors(path, {"w": torch.zeros(2)})  # no metadata: not written by cached_state
    message = refused(lambda: cached_state(path, dict), tmp_path, names=str(path))
    assert "without its build time" in message


@pytest.mark.parametrize(
    ("content", "says"),
    [('{"scores": {"forget', "truncated or not a dualoptim JSON"), ("[1, 2]", "lacks ['scores'")],
    ids=["truncated", "foreign"],
)
def test_a_damaged_cached_evaluation_is_named(tmp_path: Path, content: str, says: str) -> None:
    """The reader of the LLM's cached evaluations and of RT's metrics."""
    path = tmp_path / "eval-target-0123.json"
    path.write_text(content)
    message = refused(lambda: read_json(path, ("scores",)), tmp_path, names=str(path))
    assert says in message


@pytest.mark.slow  # trains (compiles) a model, or imports diffusers
def test_a_truncated_diffusion_cache_is_named(tmp_path: Path) -> None:
    from dualoptim.tasks.diffusion.config import DiffusionExperiment, GenDataSpec
    from dualoptim.tasks.diffusion.world import World

    path = write_images(tmp_path / "set.npz", seed=0)
    cache = tmp_path / "cache"
    world = World(DiffusionExperiment(data=GenDataSpec(str(path)), cache_dir=str(cache)))
    model = cache / f"denoiser-{world.model_key}.safetensors"
    write_tensors(model, {"w": torch.zeros(64)}, {"seconds": "1.0"})
    truncate(model)
    message = refused(lambda: world.original, cache, names=str(model))
    assert "delete it to rebuild it" in message


# --- TOFU splits -----------------------------------------------------------------------------


@pytest.fixture
def tofu(tmp_path: Path) -> Path:
    write_tofu(tmp_path / "tofu", n_authors=2, per_author=2)
    return tmp_path / "tofu"


@pytest.mark.parametrize(
    ("garbage", "says"),
    [
        (b"\xff\xfe\x00garbage\n", "line 2: not UTF-8 text"),
        (b"[1, 2,\n", "line 2: invalid JSON"),
        (b'"a string"\n', "line 2: expected a JSON object"),
    ],
    ids=["binary", "not-json-lines", "not-an-object"],
)
def test_a_garbage_tofu_split_is_named_with_its_line(tofu: Path, garbage: bytes, says: str) -> None:
    path = tofu / "forget01.json"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + garbage + b"".join(lines[1:]))
    message = refused(lambda: load_split("forget01", tofu), tofu, names=f"{path}, {says}")
    assert "one JSON object per line" in message or "expected a JSON object" in message


def test_a_tofu_row_missing_a_field_is_named(tofu: Path) -> None:
    path = tofu / "retain_perturbed.json"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"paraphrased_answer"', '"renamed"')
    path.write_text("".join(lines))
    refused(
        lambda: load_split("retain_perturbed", tofu),
        tofu,
        names=f"{path}, line 2: missing field 'paraphrased_answer'",
    )
