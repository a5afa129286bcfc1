"""What a notebook's set-up cell does with WEIGHTS and OUT: a reader cannot pass a command-line
flag, so the parameters cell decides what happens when the model hub cannot be reached."""

import re
import sys
import types
from pathlib import Path

import huggingface_hub
import nbformat
import papermill
import pytest

from cosas_tutorial import model, notebook
from cosas_tutorial.config import get_profile
from cosas_tutorial.model import WeightsUnavailableError

BOOK = Path(__file__).resolve().parents[1] / "book"


@pytest.fixture
def hub_unreachable(monkeypatch, tmp_path):
    # the hub client read HF_HUB_OFFLINE and its cache folder when it was imported, so setting
    # the environment here would change nothing (it would retry the network for ~20 s)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture
def hub_answers(monkeypatch):
    """Every weight download succeeds; returns the weights loaded, in order."""
    loaded = []
    monkeypatch.setattr(model, "build_model", lambda encoder, weights: loaded.append(weights))
    return loaded


def run_setup(tmp_path, weights, profile="gpu"):
    """``setup`` on an existing folder as DATA (nothing is generated), quietly."""
    out = tmp_path / "out"
    return notebook.setup(profile, str(tmp_path), out=str(out), weights=weights, verbose=False)


def test_auto_without_the_hub_falls_back_on_random_initialisation(
    hub_unreachable, tmp_path, capsys
):
    assert get_profile("gpu").encoder_weights == "imagenet"
    resolved = run_setup(tmp_path, "auto")
    assert resolved.config.encoder_weights is None
    assert resolved.config.replace(encoder_weights="imagenet") == get_profile("gpu")
    warning = capsys.readouterr().err
    assert warning.startswith("Warning: imagenet weights for mit_b2 could not be loaded")
    assert "offline mode" in warning and "random initialisation" in warning
    assert "scores will be lower than with imagenet weights" in warning


def test_imagenet_without_the_hub_stops_before_anything_is_made(hub_unreachable, tmp_path):
    with pytest.raises(WeightsUnavailableError, match='offline mode.*WEIGHTS = "none"'):
        run_setup(tmp_path, "imagenet", profile="ci")
    assert not (tmp_path / "out").exists()


def test_none_is_random_initialisation_without_asking_the_hub(monkeypatch, tmp_path, capsys):
    def no_hub(*args):
        raise AssertionError("the model hub was asked for weights")

    monkeypatch.setattr(model, "build_model", no_hub)
    assert run_setup(tmp_path, "none").config.encoder_weights is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "weights, profile, expected",
    [("auto", "gpu", "imagenet"), ("auto", "cpu", None), ("imagenet", "cpu", "imagenet")],
)
def test_weights_that_load_are_kept_and_loaded_once(
    hub_answers, tmp_path, capsys, weights, profile, expected
):
    assert run_setup(tmp_path, weights, profile).config.encoder_weights == expected
    assert hub_answers == ([expected] if expected else [])  # loading them caches them
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("weights", ["random", "ImageNet", ""])
def test_unknown_weights_are_refused(tmp_path, weights):
    with pytest.raises(ValueError, match="one of auto, imagenet, none"):
        run_setup(tmp_path, weights)


def test_setup_mounts_drive_for_its_paths(monkeypatch, hub_answers, tmp_path):
    asked = []
    monkeypatch.setattr(notebook, "mount_drive", lambda *paths: asked.append(paths))
    run_setup(tmp_path, "auto")
    assert asked == [(str(tmp_path), str(tmp_path / "out"))]


@pytest.fixture
def colab(monkeypatch):
    """A stand-in for Colab's module (its presence is how `in_colab` knows); returns the
    folders Drive was mounted on."""
    mounted = []
    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    return mounted


def test_drive_is_mounted_in_colab_when_a_path_lies_on_it(colab):
    notebook.mount_drive("synthetic", "runs/book")
    assert colab == []
    notebook.mount_drive("synthetic", "/content/drive/MyDrive/cosas-runs")
    assert colab == ["/content/drive"]


def test_drive_is_mounted_once(colab, monkeypatch, tmp_path):
    monkeypatch.setattr(notebook, "DRIVE", tmp_path / "drive")
    runs = tmp_path / "drive" / "MyDrive" / "cosas-runs"
    notebook.mount_drive(runs)
    runs.parent.mkdir(parents=True)  # what mounting makes
    notebook.mount_drive(runs)
    assert colab == [str(tmp_path / "drive")]


TRAINS = re.compile(r"\b(?:run_experiment|run_ablation|ensure_runs|fit)\(")


def test_every_chapter_that_trains_has_a_weights_parameter_and_passes_it_to_setup():
    """A chapter trains when its code calls the package's training entry points; its
    parameters cell then declares WEIGHTS = "auto" and its set-up cell passes it on."""
    trains, declares = set(), set()
    for path in sorted(BOOK.glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        if TRAINS.search("\n".join(c.source for c in cells if c.cell_type == "code")):
            trains.add(path.stem)
        parameters = papermill.inspect_notebook(str(path))
        if "WEIGHTS" not in parameters:
            continue
        declares.add(path.stem)
        assert parameters["WEIGHTS"]["default"] == '"auto"', path.name
        at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
        assert "weights=WEIGHTS" in cells[at + 1].source, f"{path.name}: setup ignores WEIGHTS"
    assert {"03_standard_training", "09_stain_and_tta"} <= trains
    assert declares == trains
