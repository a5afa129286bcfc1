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
# All three run leave-one-domain-out under the equal-steps budget; ci: 2 epochs × 2 steps.
MODELS = ("standard", "union", "cross-task")
TRAINING_DOMAINS = {
    "task1": {"colorectum", "pancreas", "stomach"},
    "task2": {"3d-1000", "kfbio-400", "teksqray-600p"},
}
TEST_SET_DOMAINS = {"task1": {"esophagus", "duodenum"}, "task2": {"3d-250", "leica-450", "motic"}}
CI_STEPS = 4
# chapter 5's verdicts, e.g. "task1 (cross-organ), unseen domains: cross-task − standard: +0.021
# [-0.010, +0.050] over 30 images, 3 seeds: no clear difference"
VERDICT = re.compile(
    r"^(task[12]) \([a-z-]+\), unseen domains: (\S+) − (\S+): [+-]\d\.\d{3} "
    r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\] over (\d+) images, (\d+) seeds?: (.+)$",
    re.M,
)


def _experiment_records(out: Path) -> list[dict]:
    return read_jsonl(out / "experiment" / "results.jsonl")


def assert_lodo(records, strategies, seeds=(0,), tasks=("task1", "task2"), test_set=True):
    """Leave-one-domain-out records of ``strategies``: for every task and seed, one unit per
    training domain, scored on that domain (and, with ``test_set``, on the COSAS24-TestSet
    domains), every strategy with the same number of steps, the trivial predictors beside them.
    Returns the strategies' records."""
    assert {r["protocol"] for r in records} == {"lodo"}
    assert {r["config"]["budget"] for r in records} == {"equal-steps"}
    trained = [r for r in records if r["strategy"] in strategies]
    assert {r["task"] for r in trained} == set(tasks)
    for task in tasks:
        mine = [r for r in trained if r["task"] == task]
        units = {(r["strategy"], r["seed"], r["held_out"]) for r in mine}
        assert units == {
            (s, k, d) for s in strategies for k in seeds for d in TRAINING_DOMAINS[task]
        }
        for r in mine:
            domains = {image["domain"] for image in r["images"]}
            if r["history"]:  # the record of training: the held-out domain
                assert domains == {r["held_out"]}, (task, r["strategy"], r["held_out"])
            else:  # scored afterwards: the COSAS24-TestSet
                assert domains == TEST_SET_DOMAINS[task], (task, r["strategy"], r["held_out"])
        scored_test = {(r["strategy"], r["seed"], r["held_out"]) for r in mine if not r["history"]}
        assert scored_test == (units if test_set else set())
        trivial = {(r["strategy"], r["seed"]) for r in records if r["task"] == task}
        assert {(b, k) for b in ("all-tumour", "all-background") for k in seeds} <= trivial
    assert {r["steps"] for r in trained} == {CI_STEPS}  # equal steps for every strategy
    return trained


def test_03_standard_training(book_out, installed_book):
    notebook = run_notebook("03_standard_training", book_out, installed_book, PROGRESS=False)
    assert_figures(book_out, "03_training_curves", "03_scores")
    records = _experiment_records(book_out)
    assert {r["strategy"] for r in records} == {"standard", "all-tumour", "all-background"}
    assert_lodo(records, ["standard"])
    for task in ("task1", "task2"):
        run = book_out / "experiment" / f"{task}-standard-lodo-seed0"
        assert (run / "run.json").is_file()
        assert all((run / f"fold{k}" / "model.pt").is_file() for k in range(3))
    text = text_output(notebook)
    # the chapter's written-out training loop is fit's computation (same batches, rates, losses)
    gap = float(text.split("largest loss difference from fit: ")[1].split()[0])
    assert gap < 1e-5
    assert "the hardest held-out domain is" in text  # leave-one-domain-out by hand, computed
    # ... and it is run_experiment's computation, tile for tile (on a CPU)
    assert float(text.split("largest score difference: ")[1].split()[0]) < 1e-9
    assert "equal-steps: steps in all per unit: standard 4, union 4, cross-task 4" in text
    paper = re.search(
        r"paper: steps in all per unit: standard (\d+), union (\d+), cross-task", text
    )
    assert int(paper[2]) > int(paper[1])  # the paper's rule: union, with more tiles, more steps
    assert "protocol lodo · budget equal-steps · seeds 0 · profile ci" in text
    assert text.count("against the best trivial predictor") == 2  # 2 tasks, unseen domains


def test_04_union_training(book_out, installed_book):
    notebook = run_notebook("04_union_training", book_out, installed_book, PROGRESS=False)
    assert_figures(book_out, "04_training_curves", "04_scores", "04_paired")
    records = _experiment_records(book_out)
    assert_lodo(records, ["standard", "union"])
    text = text_output(notebook)
    for task in ("task1", "task2"):
        assert f"{task}: 4 steps for standard, 4 for union; each training tile is drawn" in text
    assert "times by union" in text
    assert "union's margin over the best trivial predictor" in text
    assert "protocol lodo · budget equal-steps · seeds 0 · profile ci" in text
    # exercise 1 (its solution ran): both strategies under the paper's budget rule
    paper = read_jsonl(book_out / "paper-budget" / "results.jsonl")
    assert {r["config"]["budget"] for r in paper} == {"paper"}
    steps = {(r["task"], r["strategy"]): r["steps"] for r in paper if r["history"]}
    for task in ("task1", "task2"):
        assert steps[task, "union"] > steps[task, "standard"]


def test_05_cross_task_pretraining(book_out, installed_book):
    notebook = run_notebook("05_cross_task_pretraining", book_out, installed_book, PROGRESS=False)
    assert_figures(book_out, "05_training_curves", "05_scores", "05_paired", "05_strategy_masks")
    records = _experiment_records(book_out)
    trained = assert_lodo(records, MODELS, seeds=(0, 1, 2))
    stages = {h["stage"] for r in trained if r["strategy"] == "cross-task" for h in r["history"]}
    assert stages == {"pretrain", "finetune"}
    text = text_output(notebook)
    assert "every strategy takes the same number of steps in every unit: True" in text
    assert "protocol lodo · budget equal-steps · seeds 0, 1, 2 · profile ci" in text
    # the ranking: a verdict per task and pair, from 3 seeds, on every unseen image of the task
    images = {
        task: len(
            {(i["domain"], i["id"]) for r in trained if r["task"] == task for i in r["images"]}
        )
        for task in ("task1", "task2")
    }
    verdicts = [v for v in VERDICT.findall(text) if v[4] == "3"]
    pairs = [("cross-task", "standard"), ("cross-task", "union"), ("union", "standard")]
    assert sorted(v[:3] for v in verdicts) == sorted(
        (task, a, b) for task in ("task1", "task2") for a, b in pairs
    )
    for task, a, b, n, _seeds, verdict in verdicts:
        assert int(n) == images[task]
        assert verdict in {f"{a} better", f"{b} better", "no clear difference"}, verdict
    # under each task's verdicts: the better trivial predictor, and the strategies above it
    from cosas_tutorial.results import overall_scores

    overall = overall_scores(records)
    for task in ("task1", "task2"):
        unseen = overall[(overall["task"] == task) & (overall["split"] == "test")]
        unseen = unseen.set_index("strategy")
        above = [s for s in MODELS if unseen.loc[s, "margin"] > 0]
        floor = unseen["best_trivial"].iloc[0]
        assert (
            f"{task}: the better trivial predictor scores {floor:.3f} on these images; "
            f"above it: {', '.join(above) or 'no strategy'}"
        ) in text
    assert "Galdran 2024 (published)" in text and "challenge winner" in text
    assert "not attributed here" in text
    assert "pretrain loss" in text and "fine-tune loss" in text
    # the strategy of exercise 2 (its solution, then its check) ran into a folder of its own
    mine = read_jsonl(book_out / "union-finetune" / "results.jsonl")
    assert_lodo(mine, ["union-finetune"], tasks=["task1"])
    own = [r for r in mine if r["strategy"] == "union-finetune"]
    assert {h["stage"] for r in own for h in r["history"]} == {"union", "finetune"}
    # exercise 3: the three strategies under the paper's rule, cross-task longer than standard
    paper = read_jsonl(book_out / "paper-budget" / "results.jsonl")
    steps = {(r["task"], r["strategy"]): r["steps"] for r in paper if r["history"]}
    for task in ("task1", "task2"):
        assert steps[task, "cross-task"] > steps[task, "standard"]


def test_06_error_analysis(book_out, installed_book):
    import pandas as pd

    strategies = ("standard", "union", "cross-task")
    runs = book_out / "06_runs"  # the chapter's own cv runs (chapter 7 reuses them)
    had_runs = all((runs / f"task2-{s}-cv-seed0" / "records.jsonl").is_file() for s in strategies)
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
    if had_runs:  # the chapter ran before on this OUT: its runs are read back
        assert "runs reused: ['cross-task', 'standard', 'union']; to train: none" in text
    else:
        assert "runs reused: none; to train: ['standard', 'union', 'cross-task']" in text
    for strategy in strategies:  # cross-validation runs, named by run_name, one fold on ci
        run = runs / f"task2-{strategy}-cv-seed0"
        assert (run / "run.json").is_file() and (run / "fold0" / "model.pt").is_file()
    records = read_jsonl(runs / "results.jsonl")
    assert {r["protocol"] for r in records} == {"cv"}
    assert {r["split"] for r in records} == {"cv", "test"}
    assert "protocol cv · budget equal-steps · seeds 0 · profile ci" in text
    chosen = re.search(r"model: (\S+) \(best mean CV score\), fold 0 of (\S+)", text)
    assert chosen[1] in strategies and chosen[2].endswith(f"task2-{chosen[1]}-cv-seed0")
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

    notebook = run_notebook("07_shift_dial", book_out, installed_book, PROGRESS=False)
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
        records = read_jsonl(book_out / "shift-dial" / shift / "results.jsonl")
        assert {r["protocol"] for r in records} == {"cv"} and {r["seed"] for r in records} == {0}
        for strategy in ("standard", "union", "cross-task"):
            run = book_out / "shift-dial" / shift / f"task2-{strategy}-cv-seed0"
            assert (run / "fold0" / "model.pt").is_file()
    gap = pd.read_csv(book_out / "07_domain_gap.csv").set_index("shift")["domain accuracy"]
    assert gap[1.0] > gap[0.0]
    text = text_output(notebook)
    # figure, tables and reading say what made the runs; the reading says what one seed misses
    assert text.count("protocol cv · budget equal-steps · seeds 0 · profile ci") >= 4
    assert "one seed (0): training noise is not measured" in text
    # the cost of three seeds, from the training time the runs recorded
    recorded = re.search(r"training recorded: ([\d.]+) (s|min) per seed for 6 models", text)
    assert recorded, "the chapter states the training time of one seed"
    assert re.search(r"3 seeds: about [\d.]+ (s|min) of training, [\d.]+ (s|min) more", text)
    # a second seed: the first is read back, and the winner is read under each seed alone
    notebook = run_notebook(
        "07_shift_dial", book_out, installed_book, solutions=False, PROGRESS=False, SEEDS=2
    )
    text = text_output(notebook)
    assert "seeds 0, 1 · profile ci" in text
    winners = re.search(r"least loss under each seed alone: seed 0 (\S+), seed 1 (\S+)\n", text)
    assert winners and {winners[1], winners[2]} <= {"standard", "union", "cross-task"}


def test_08_real_cosas(book_out, installed_book, tmp_path):
    import shutil

    from cosas_tutorial.config import get_profile
    from cosas_tutorial.experiment import run_name
    from cosas_tutorial.notebook import resolve_data

    # A reader's copy: a COSAS-layout training set and nothing else (the synthetic one of
    # chapters 3–5 stands in for COSAS): checked, shown, trained on leave-one-domain-out, scored.
    stand_in = resolve_data("synthetic", get_profile("ci"))
    copy = tmp_path / "my-cosas"
    shutil.copytree(stand_in / "COSAS24-TrainingSet", copy / "COSAS24-TrainingSet")
    notebook = run_notebook(
        "08_real_cosas",
        book_out,
        installed_book,
        DATA=str(copy),
        STRATEGIES=["standard", "cross-task"],  # the ensemble exercise reads task1-cross-task
        TASKS=["task1"],
        PROGRESS=False,
    )
    text = text_output(notebook)
    assert f"This chapter runs on your COSAS-layout copy at {copy}" in text
    assert "No COSAS copy" not in text
    assert "COSAS data check" in text and "OK;" in text
    records = read_jsonl(book_out / "experiment-cosas" / "results.jsonl")
    assert_lodo(records, ["standard", "cross-task"], tasks=["task1"], test_set=False)
    assert re.search(r"^task1 \(cross-organ\), unseen domains: cross-task − standard: ", text, re.M)
    assert "Galdran 2024 (published)" in text
    assert_figures(book_out, "08_budget", "08_gallery", "08_scores")

    # Without a copy (last, so that the executed copy is the one the book shows): the synthetic
    # tier with the settings of chapters 3–5, whose runs are read back when they ran first.
    had_runs = all(
        (book_out / "experiment" / run_name(t, s, "lodo", 0) / "records.jsonl").is_file()
        for t in ("task1", "task2")
        for s in MODELS
    )
    for name in ("08_budget", "08_gallery", "08_scores"):
        (book_out / f"{name}.png").unlink()
    notebook = run_notebook(
        "08_real_cosas",
        book_out,
        installed_book,
        DATA=str(book_out / "no-cosas-here"),
        PROGRESS=False,
    )
    text = text_output(notebook)
    assert "No COSAS copy at" in text
    assert "This chapter runs on the synthetic tier (a stand-in, not the COSAS data)" in text
    if had_runs:  # chapters 3–5 ran first in this session: nothing trains
        assert "6 of 6 runs already in" in text
    assert "optimisation steps in all" in text
    assert "protocol lodo · budget equal-steps · seeds 0 · profile ci" in text
    assert re.search(r"^task2 \(cross-scanner\), unseen domains: union − standard: ", text, re.M)
    assert_figures(book_out, "08_budget", "08_gallery", "08_scores")


def test_09_stain_and_tta(book_out, installed_book):
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
    # what the small profiles keep of the ablation, said before it runs
    assert (
        "ablation on synthetic: standard, cross-task, 3 of 6 tiles per domain; open-tissue: "
        "held out ['glas-colon', 'ocdc-oral'] of 5 sources, 3 tiles per source, 1 of 2 epochs"
        in text
    )

    # synthetic tier, cv with held-out scanners: the whole grid, TTA off and on, both baselines
    synthetic = read_jsonl(book_out / "09_ablation_synthetic" / "ablation.jsonl")
    assert {r["protocol"] for r in synthetic} == {"cv"}
    table = ablation_table(synthetic)
    assert table.columns[4] == "in-domain (CV)"
    assert list(table.columns[5:]) == ["3d-250", "leica-450", "motic", "unseen (all)"]
    assert len(table) == 2 * 3 * 2 + 2
    assert (table[["3d-250", "leica-450", "motic"]] != "–").all().all()
    # one run_experiment per stain handling: <out>/<stain>/<task>/<run_name>
    runs = book_out / "09_ablation_synthetic"
    macenko = runs / "macenko" / "task2" / "task2-cross-task-cv-seed0" / "fold0"
    assert (macenko / "stain_norm.json").is_file()
    hed = runs / "hed" / "task2" / "task2-standard-cv-seed0" / "fold0"
    assert (hed / "model.pt").is_file() and not (hed / "stain_norm.json").exists()

    # open-tissue, leave one domain out (two sources held out on ci): no in-domain column,
    # no cross-task (one task)
    real = read_jsonl(book_out / "09_ablation_open_tissue" / "ablation.jsonl")
    table = ablation_table(real)
    assert list(table.columns[4:]) == ["glas-colon", "ocdc-oral", "unseen (all)"]
    assert set(table["strategy"]) == {"standard", "all-tumour", "all-background"}
    assert len(table) == 3 * 2 + 2 and {r["protocol"] for r in real} == {"lodo"}
    trained = [r for r in real if r["strategy"] == "standard"]
    assert {r["held_out"] for r in trained} == {"glas-colon", "ocdc-oral"}
    assert "skipping cross-task" in text

    for tree in ("synthetic (task2)", "open-tissue (leave one domain out)"):
        for change in ("TTA on − off", "hed − none", "macenko − none"):
            assert re.search(rf"{re.escape(tree)}, task\d: {change}: [+-]\d\.\d+ ± ", text), (
                tree,
                change,
            )
    for source in ("glas-colon", "ocdc-oral"):  # the effects per held-out source
        assert f"    {source} held out: TTA on − off: " in text
    # the TTA figure's fold, loaded with its stain normaliser from the run folder
    assert "09_ablation_synthetic/none/task2/task2-standard-cv-seed0, fold 0" in text
    assert "mean |TTA − plain| on this tile" in text
    # runs_not_learnt says what it compared: in-domain scores under cv, unseen ones under lodo
    not_learnt = "runs not above the trivial predictors, compared on"
    assert text.count(f"synthetic: {not_learnt} in-domain (CV) images:") == 1
    assert text.count(f"open-tissue: {not_learnt} all unseen images (lodo") == 1
