import subprocess
import sys

import numpy as np
from PIL import Image

from cosas_tutorial.cli import main


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
