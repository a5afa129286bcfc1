"""Every notebook of the book, executed with papermill on the ``ci`` profile, and what it made.

Notebooks run in book order and share one output folder (``OUT``), as in ``make book``: a later
chapter reuses the runs of an earlier one when they are there and trains them when they are not.
Each test asserts on the files a notebook wrote, not only that it ran; the code of the
chapter's exercise solutions runs after its last cell.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
from execute_book import run_papermill

BOOK = Path(__file__).resolve().parents[1] / "book"


# A solution is a dropdown admonition fenced by three backticks (prose only) or four (with code).
SOLUTION = re.compile(r"^(`{3,4})\{admonition\} Solution\n(.*?)^\1$", re.S | re.M)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def solution_texts(notebook: nbformat.NotebookNode) -> list[str]:
    """The body of every exercise's solution, in the notebook's order."""
    return [
        body
        for cell in notebook.cells
        if cell.cell_type == "markdown"
        for _, body in SOLUTION.findall(cell.source)
    ]


def exercise_solutions(notebook: nbformat.NotebookNode) -> list[str]:
    """The code of every solution that has some (its ```python blocks joined), in order."""
    blocks = [PYTHON_BLOCK.findall(body) for body in solution_texts(notebook)]
    return ["".join(code) for code in blocks if code]


def tagged(cell, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def solution_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """What a student runs after the chapter, in order: the code of every solution, each code
    exercise's solution followed by its check cell again (tagged ``check``).

    A code exercise is three cells: one tagged ``exercise`` (the stub), one tagged ``check``,
    then the markdown cell whose Solution holds the exercise cell's full code.
    """
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "markdown":
            continue
        for _, body in SOLUTION.findall(cell.source):
            code = "".join(PYTHON_BLOCK.findall(body))
            if code:
                cells.append(nbformat.v4.new_code_cell(code))
            before = notebook.cells[index - 1] if index else None
            if code and before is not None and tagged(before, "check"):
                check = nbformat.v4.new_code_cell(before.source)
                check.metadata["tags"] = ["check"]
                cells.append(check)
    return cells


def check_lines(cell) -> list[str]:
    """The ✓/✗ lines a check cell printed."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")
    return [line for line in text.splitlines() if line.startswith(("✓", "✗"))]


def run_notebook(name: str, out: Path, installed, solutions: bool = True, **parameters):
    """Execute chapter ``<name>`` with PROFILE="ci" and OUT=out; return the executed notebook.

    The chapter runs as a reader's copy would: from ``installed.book`` (book/ copied outside the
    checkout), on the kernel of the package installed from a wheel (conftest.installed_book).
    Every check cell of the chapter must report its exercise "not done yet" (the committed
    stubs). With ``solutions``, the exercises' solutions run after the last cell in the same
    kernel, as a student would run them; each must finish without error and show something, and
    each exercise's check, run again after its solution, must pass. They are then cut, so that
    ``<name>.executed.ipynb`` (which the book test builds from) is the chapter alone.
    """
    notebook = nbformat.read(installed.book / f"{name}.ipynb", as_version=4)
    extra = solution_cells(notebook) if solutions else []
    notebook.cells += extra
    source, executed = out / f"{name}.source.ipynb", out / f"{name}.executed.ipynb"
    nbformat.write(notebook, source)
    # The kernel works in the book's folder (the chapters' relative paths), as a reader's does.
    parameters = {"PROFILE": "ci", "OUT": str(out), **parameters}
    run_papermill(source, executed, parameters, cwd=installed.book, kernel_name=installed.kernel)
    notebook = nbformat.read(executed, as_version=4)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"{name}: {output.get('ename')}"
    first = len(notebook.cells) - len(extra)
    for number, cell in enumerate(notebook.cells[:first]):
        if tagged(cell, "check"):
            lines = check_lines(cell)
            assert len(lines) == 1 and "not done yet" in lines[0], (name, number, lines)
    for number, cell in enumerate(notebook.cells[first:], start=1):
        assert cell.outputs, f"{name}: solution cell {number} showed nothing"
        if tagged(cell, "check"):
            lines = check_lines(cell)
            assert len(lines) == 1 and lines[0].endswith(": passed"), (name, number, lines)
    notebook.cells = notebook.cells[:first]
    nbformat.write(notebook, executed)
    return notebook


def text_output(notebook: nbformat.NotebookNode) -> str:
    """All stdout and text/plain output of a notebook, joined."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_figures(out: Path, *names: str) -> None:
    for name in names:
        path = out / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 5_000, f"figure {path} missing or empty"


def test_runner_injects_parameters_and_the_kernel_starts_quietly(tmp_path, capfd):
    """The kernel starts without a warning on the terminal (ipykernel ≥ 7.3 warns there when
    its messages are not encrypted), and the parameters reach the notebook."""
    source, executed = tmp_path / "source.ipynb", tmp_path / "executed.ipynb"
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    parameters = nbformat.v4.new_code_cell("ANSWER = 0")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell("print(ANSWER * 2)")]
    nbformat.write(notebook, source)
    run_papermill(source, executed, {"ANSWER": 21})
    result = nbformat.read(executed, as_version=4)
    assert text_output(result).strip() == "42"
    # the injected cell (this machine's values) is cut from the book; the chapter's own is shown
    injected = [c for c in result.cells if tagged(c, "injected-parameters")]
    assert len(injected) == 1 and tagged(injected[0], "remove-cell")
    assert not tagged(result.cells[0], "remove-cell")
    # Only the kernel application's own lines: at shutdown, ipykernel 7.4 now and then logs a
    # traceback of a closed control socket (a race in its shutdown, not in the start-up).
    assert "[IPKernelApp]" not in capfd.readouterr().err


def test_every_solution_is_found():
    """Each "Solution" admonition of the book is found, and each of its python blocks, so that
    the notebook tests run all the code the solutions show."""
    found = 0
    for path in sorted(BOOK.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        written = sum(
            cell.source.count("{admonition} Solution")
            for cell in notebook.cells
            if cell.cell_type == "markdown"
        )
        bodies = solution_texts(notebook)
        assert len(bodies) == written, path.name
        for body in bodies:
            assert len(PYTHON_BLOCK.findall(body)) == body.count("```python"), path.name
        found += len(exercise_solutions(notebook))
    assert found >= 10  # the book's exercises with code, when this test was written: 11


# --- one test per notebook, in book order -------------------------------------------------------


def test_01_domain_shift(book_out, installed_book):
    import pandas as pd

    notebook = run_notebook("01_domain_shift", book_out, installed_book)
    assert_figures(
        book_out,
        "01_open_tissue_gallery",
        "01_data_gallery",
        "01_open_tissue_rgb",
        "01_open_tissue_hed",
        "01_data_task1_rgb",
        "01_data_task2_hed",
        "01_stain_vectors_open_tissue",
        "01_stain_vectors_synthetic",
        "01_embedding",
        "01_shift_grid_task1",
        "01_shift_grid_task2",
        "01_reacquired",
        "01_shift_separability",
    )
    open_tissue = {"glas-colon", "ebhi-polyp", "ebhi-classes", "ocdc-oral", "camelyon-node"}
    synthetic = {"colorectum", "pancreas", "stomach", "esophagus", "duodenum"}
    synthetic |= {"3d-1000", "kfbio-400", "teksqray-600p", "3d-250", "leica-450", "motic"}
    colour = pd.read_csv(book_out / "01_colour_stats.csv")
    assert set(colour.loc[colour["tier"] == "open-tissue", "domain"]) == open_tissue
    assert set(colour.loc[colour["tier"] == "synthetic", "domain"]) == synthetic
    assert colour[["R", "G", "B"]].stack().between(0, 255).all()
    assert (colour["tissue_fraction"] > 0).all() and (colour["OD_R"] > 0).all()

    # "all background" scores 1 exactly on the tumour-free tiles and 0 elsewhere
    floor = pd.read_csv(book_out / "01_baselines.csv")
    assert set(floor["domain"]) == open_tissue | synthetic
    expected = floor["tumour_free_tiles"] / floor["tiles"]
    assert (floor["all-background"] - expected).abs().max() < 1e-9
    assert floor["all-tumour"].between(0, 1).all()

    vectors = pd.read_csv(book_out / "01_stain_vectors.csv")
    assert (vectors["H_R"] > vectors["E_R"]).all()  # haematoxylin absorbs more red
    assert "H error (°)" in text_output(notebook)  # estimate checked against the true scanner

    separability = pd.read_csv(book_out / "01_separability.csv")
    assert len(separability) == 3 and separability["accuracy"].between(0, 1).all()
    dial = pd.read_csv(book_out / "01_shift_separability.csv")
    assert set(dial["shift"]) == {0.0, 0.5, 1.0} and set(dial["task"]) == {"task1", "task2"}
    scanners = dial[dial["task"] == "task2"].set_index("shift")["accuracy"]
    assert scanners[1.0] > scanners[0.0] + 0.3  # the dial pulls the scanners apart


def test_02_fpn_mit(book_out, installed_book):
    import pandas as pd

    notebook = run_notebook(
        "02_fpn_mit",
        book_out,
        installed_book,
        INPUT_SIZE=256,
        ENCODERS=["mit_b0", "mit_b1"],
        FLOP_SIZE=256,
    )
    assert_figures(book_out, "02_attention", "02_pyramid", "02_model_sizes", "02_forward")
    sizes = pd.read_csv(book_out / "02_model_summary.csv")
    assert list(sizes["encoder"]) == ["mit_b0", "mit_b1"]
    assert abs(sizes.loc[0, "params_M"] - 5.08) < 0.05  # FPN + mit_b0
    assert sizes.loc[1, "params_M"] > 2 * sizes.loc[0, "params_M"]
    assert (sizes["GFLOPs@256"] > 0).all()
    cost = pd.read_csv(book_out / "02_attention_cost.csv")
    assert list(cost["R"]) == [8, 4, 2, 1] * 2  # read off the model, at 256² and 1024²
    assert (cost["saving"] == cost["R"] ** 2).all()
    assert cost.loc[cost["input"] == "1024²", "tokens N"].iloc[0] == 256**2
    text = text_output(notebook)
    difference = float(text.split("largest difference from the library's output: ")[1].split()[0])
    assert difference < 1e-4  # the hand-written attention matches smp's
    assert "mean probability" in text


# Chapters 3–5 share OUT/experiment: 4 and 5 reuse the runs of 3 (and 4), as in `make book`.
def _experiment_runs(out: Path) -> set[tuple[str, str]]:
    return {(r["task"], r["strategy"]) for r in read_jsonl(out / "experiment" / "results.jsonl")}


def test_03_standard_training(book_out, installed_book):
    notebook = run_notebook("03_standard_training", book_out, installed_book, PROGRESS=False)
    assert_figures(book_out, "03_training_curves", "03_scores")
    runs = _experiment_runs(book_out)
    for task in ("task1", "task2"):
        assert {(task, "standard"), (task, "all-tumour"), (task, "all-background")} <= runs
    for task in ("task1", "task2"):
        run = book_out / "experiment" / f"{task}-standard"
        assert (run / "run.json").is_file() and (run / "fold0" / "model.pt").is_file()
    text = text_output(notebook)
    # the chapter's written-out training loop is fit's computation (same batches, rates, losses)
    gap = float(text.split("largest loss difference from fit: ")[1].split()[0])
    assert gap < 1e-5
    assert "the hardest held-out domain is" in text  # leave-one-domain-out, computed
    assert text.count("against the best trivial predictor") == 4  # 2 tasks × (CV, unseen)


def test_04_union_training(book_out, installed_book):
    notebook = run_notebook("04_union_training", book_out, installed_book, PROGRESS=False)
    assert_figures(book_out, "04_training_curves", "04_scores", "04_paired")
    runs = _experiment_runs(book_out)
    assert {("task1", "union"), ("task2", "union"), ("task1", "standard")} <= runs
    text = text_output(notebook)
    assert "times by union" in text
    assert "union's margin over the best trivial predictor" in text


def test_05_cross_task_pretraining(book_out, installed_book):
    notebook = run_notebook("05_cross_task_pretraining", book_out, installed_book, PROGRESS=False)
    assert_figures(book_out, "05_training_curves", "05_scores", "05_strategy_masks")
    runs = _experiment_runs(book_out)
    for task in ("task1", "task2"):
        for strategy in ("standard", "union", "cross-task", "all-tumour", "all-background"):
            assert (task, strategy) in runs, f"{task} {strategy} missing from the comparison"
    records = read_jsonl(book_out / "experiment" / "results.jsonl")
    stages = {h["stage"] for r in records if r["strategy"] == "cross-task" for h in r["history"]}
    assert stages == {"pretrain", "finetune"}
    # the strategy of exercise 2 (its solution, then its check) ran into a folder of its own
    mine = read_jsonl(book_out / "union-finetune" / "results.jsonl")
    assert {(r["task"], r["strategy"]) for r in mine if r["fold"] >= 0} == {
        ("task1", "union-finetune")
    }
    assert {h["stage"] for r in mine for h in r["history"]} == {"union", "finetune"}
    text = text_output(notebook)
    assert "Galdran 2024 (published)" in text and "challenge winner" in text
    assert "pretrain loss" in text and "fine-tune loss" in text


def test_06_error_analysis(book_out, installed_book):
    import pandas as pd

    had_runs = all(
        (book_out / "experiment" / f"task2-{s}" / "records.jsonl").is_file()
        for s in ("standard", "union", "cross-task")
    )
    notebook = run_notebook("06_error_analysis", book_out, installed_book, PROGRESS=False)
    assert_figures(
        book_out,
        "06_score_distributions",
        "06_worst_cases",
        "06_score_vs_fraction",
        "06_threshold_sweep",
        "06_reliability",
    )
    text = text_output(notebook)
    if had_runs:  # chapters 3–5 ran first in this session: their runs are reused
        assert "runs reused: ['cross-task', 'standard', 'union']; to train: none" in text
    unseen = ["3d-250", "leica-450", "motic"]
    scores = pd.read_csv(book_out / "06_domain_scores.csv", index_col=0)
    assert set(scores.index) == {"in-domain (CV)", *unseen}
    assert list(scores.columns) == [
        "standard",
        "union",
        "cross-task",
        "all-tumour",
        "all-background",
    ]
    assert scores.stack().between(0, 1).all()
    table = pd.read_csv(book_out / "06_scores.csv")
    assert set(table["strategy"]) == {
        "standard",
        "union",
        "cross-task",
        "all-tumour",
        "all-background",
    }
    assert {"in-domain (CV)", *unseen, "unseen (all)"} <= set(table.columns)
    # the probabilities recomputed from the saved model give the recorded scores
    for line in text.splitlines():
        if "in the run record" in line:
            now, recorded = line.split("mean score ")[1].split(" now, ")
            assert now == recorded.split()[0], line
    calibration = pd.read_csv(book_out / "06_calibration.csv")
    assert set(calibration["images"]) == {"in-domain (CV)", *unseen}
    assert calibration["ECE"].between(0, 1).all()
    modes = pd.read_csv(book_out / "06_failure_modes.csv", index_col=0)
    assert set(modes.index) == {"in-domain (CV)", *unseen}
    assert (modes[["fp", "fn"]].sum(axis=1) <= 1).all()
    sweep = pd.read_csv(book_out / "06_threshold_sweep.csv")
    assert set(sweep["images"]) == {"in-domain (CV)", *unseen, "unseen (all)"}
    assert sweep.groupby("images").size().eq(19).all()


def test_07_shift_dial(book_out, installed_book):
    import pandas as pd

    run_notebook("07_shift_dial", book_out, installed_book, PROGRESS=False)
    assert_figures(book_out, "07_shift_dial", "07_shift_grid_task2", "07_shift_grid_task1")
    dial = pd.read_csv(book_out / "07_shift_dial.csv")
    assert set(dial["shift"]) == {0.0, 1.0}  # the ci sweep
    assert set(dial["task"]) == {"task2"}
    strategies = {"standard", "union", "cross-task", "all-tumour", "all-background"}
    for shift in (0.0, 1.0):
        for split in ("cv", "test"):
            part = dial[(dial["shift"] == shift) & (dial["split"] == split)]
            assert set(part["strategy"]) == strategies, (shift, split)
            trivial = part[part["strategy"].isin(["all-tumour", "all-background"])]
            assert abs(trivial["margin"].max()) < 1e-12  # margins are over the better baseline
    for shift in ("shift0", "shift1"):
        for strategy in ("standard", "union", "cross-task"):
            assert (
                book_out / "shift-dial" / shift / f"task2-{strategy}" / "fold0" / "model.pt"
            ).is_file()
    gap = pd.read_csv(book_out / "07_domain_gap.csv").set_index("shift")["domain accuracy"]
    assert gap[1.0] > gap[0.0]


def test_08_real_cosas(book_out, installed_book):
    from cosas_tutorial.config import get_profile
    from cosas_tutorial.notebook import resolve_data

    # With a COSAS-layout tree (the synthetic one of chapters 3–5 stands in for COSAS): the
    # data are checked, shown, trained on (or read back) and scored.
    stand_in = resolve_data("synthetic", get_profile("ci"))
    notebook = run_notebook(
        "08_real_cosas",
        book_out,
        installed_book,
        DATA=str(stand_in),
        STRATEGIES=["standard", "cross-task"],  # the ensemble exercise reads task1-cross-task
        TASKS=["task1"],
        PROGRESS=False,
    )
    text = text_output(notebook)
    assert "COSAS data absent" not in text
    assert "COSAS data check" in text and "OK;" in text
    assert "Galdran 2024 (published)" in text
    assert_figures(book_out, "08_budget", "08_gallery", "08_scores")

    # Without the data (last, so that the executed copy is the one the book shows): every cell
    # that needs the data says so, the rest still runs.
    for name in ("08_gallery", "08_scores"):
        (book_out / f"{name}.png").unlink()
    notebook = run_notebook(
        "08_real_cosas",
        book_out,
        installed_book,
        solutions=False,
        DATA=str(book_out / "no-cosas-here"),
    )
    text = text_output(notebook)
    assert text.count("COSAS data absent") >= 6
    assert "optimisation steps in all" in text
    assert_figures(book_out, "08_budget")
    assert not (book_out / "08_scores.png").exists()


def test_09_stain_and_tta(book_out, installed_book):
    import re

    from cosas_tutorial.ablation import ablation_table

    notebook = run_notebook("09_stain_and_tta", book_out, installed_book, PROGRESS=False)
    assert_figures(
        book_out,
        "09_hed",
        "09_stain_vectors",
        "09_normalisation",
        "09_stain_augmentation",
        "09_ablation_synthetic",
        "09_ablation_open_tissue",
        "09_effects",
        "09_tta",
    )
    text = text_output(notebook)
    error = float(re.search(r"largest round-trip error over \d+ real tiles: (\S+)", text)[1])
    assert error < 1e-4
    angles = re.search(r"before ([\d.]+)° / ([\d.]+)°, after ([\d.]+)° / ([\d.]+)°", text)
    before_h, before_e, after_h, after_e = map(float, angles.groups())
    assert after_h < before_h and after_h < 3 and after_e < 5  # normalised towards the reference
    assert "glass-only.png" in text and "unchanged: True" in text

    # synthetic tier, held-out scanners: the whole grid, TTA off and on, and both baselines
    synthetic = read_jsonl(book_out / "09_ablation_synthetic" / "ablation.jsonl")
    table = ablation_table(synthetic)
    assert list(table.columns[5:]) == ["3d-250", "leica-450", "motic", "unseen (all)"]
    assert len(table) == 2 * 3 * 2 + 2
    assert (table[["3d-250", "leica-450", "motic"]] != "–").all().all()
    runs = book_out / "09_ablation_synthetic" / "runs"
    assert (runs / "task2-cross-task-macenko" / "fold0" / "stain_norm.json").is_file()
    assert not (runs / "task2-standard-hed" / "fold0" / "stain_norm.json").exists()

    # open-tissue, leave one source out (two sources held out on ci); no cross-task there
    real = read_jsonl(book_out / "09_ablation_open_tissue" / "ablation.jsonl")
    table = ablation_table(real)
    assert list(table.columns[4:]) == ["in-domain (CV)", "glas-colon", "ocdc-oral", "unseen (all)"]
    assert set(table["strategy"]) == {"standard", "all-tumour", "all-background"}
    assert len(table) == 3 * 2 + 2 and {r["protocol"] for r in real} == {"loso"}
    assert "skipping cross-task" in text

    for tree in ("synthetic (task2)", "open-tissue (leave one source out)"):
        for change in ("TTA on − off", "hed − none", "macenko − none"):
            assert re.search(rf"{re.escape(tree)}, task\d: {change}: [+-]\d\.\d+ ± ", text), (
                tree,
                change,
            )
    assert "mean |TTA − plain| on this tile" in text
    assert text.count("runs not above the trivial predictors in-domain:") == 2
