import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cosas_tutorial import cli, model
from cosas_tutorial.cli import main
from cosas_tutorial.model import WeightsUnavailableError


def test_help_documents_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "cosas_tutorial.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("data", "train", "evaluate", "experiment"):
        assert command in result.stdout


def test_data_check_exit_status_and_report(tiny_synthetic, tmp_path, capsys, make_cosas_tree):
    assert main(["data", "check", str(tiny_synthetic)]) == 0
    assert "colorectum" in capsys.readouterr().out
    root = make_cosas_tree({"task2": {"kfbio-400": 2}})
    mask = next((root / "COSAS24-TrainingSet/task2/kfbio-400/mask").iterdir())
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(mask)  # wrong size and not 0/255
    assert main(["data", "check", str(root)]) == 1
    assert str(mask) in capsys.readouterr().out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "run.json" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["environment", "option"])
def test_a_failed_open_tissue_download_is_one_line(tmp_path, capsys, monkeypatch, how):
    nowhere = (tmp_path / "no-mirror").as_uri()
    monkeypatch.delenv("COSAS_OPEN_TISSUE_URL", raising=False)
    argv = ["data", "open-tissue", str(tmp_path / "out")]
    if how == "environment":
        monkeypatch.setenv("COSAS_OPEN_TISSUE_URL", nowhere)
    else:
        argv += ["--base-url", nowhere]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"cosas: error: open-tissue download failed: cannot fetch {nowhere}/")
    assert "COSAS_OPEN_TISSUE_URL" in err


@pytest.fixture
def hub_down(monkeypatch):
    """No pretrained weights can be loaded."""

    def unavailable(encoder, weights):
        raise WeightsUnavailableError(weights, encoder, "no network")

    monkeypatch.setattr(model, "build_model", unavailable)


@pytest.mark.parametrize("weights, expected", [(None, "imagenet"), ("auto", None), ("none", None)])
def test_weights_option_without_the_hub(hub_down, tmp_path, capsys, weights, expected):
    argv = ["experiment", "--data", str(tmp_path), "--profile", "gpu", "--out", str(tmp_path)]
    args = cli._parser().parse_args(argv + (["--weights", weights] if weights else []))
    assert cli._config(args).encoder_weights == expected  # no option: the profile's, unchecked
    assert ("random initialisation" in capsys.readouterr().err) == (weights == "auto")


def test_weights_imagenet_without_the_hub_is_an_error(hub_down, tmp_path, capsys):
    argv = ["experiment", "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main(argv + ["--weights", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cosas: error: could not load imagenet weights for mit_b0 (no network)")
    assert not (tmp_path / "out").exists()
