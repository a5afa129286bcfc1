"""cosas_tutorial: the helper package of the COSAS domain-generalisation tutorial.

The names the book uses are importable from here, e.g. ``from cosas_tutorial import setup,
run_experiment``. Each lives in the module :data:`EXPORTS` names and is imported on first use,
so that ``import cosas_tutorial`` stays light (the ``cosas data`` commands and the release
tools need no PyTorch).
"""

from importlib import import_module

__version__ = "0.2.0"

# name -> the module (under cosas_tutorial) that defines it
EXPORTS = {
    "setup": "notebook",
    "save_figure": "notebook",
    "resolve_data": "notebook",
    "RunConfig": "config",
    "get_profile": "config",
    "discover": "data.cosas",
    "read_image": "data.cosas",
    "read_mask": "data.cosas",
    "build_model": "model",
    "Strategy": "strategies",
    "Stage": "strategies",
    "STRATEGIES": "strategies",
    "BASELINES": "strategies",
    "register": "strategies",
    "get_strategy": "strategies",
    "run_experiment": "experiment",
    "ensure_runs": "experiment",
    "plan_stages": "experiment",
    "protocol_units": "experiment",
    "run_name": "experiment",
    "task_samples": "experiment",
    "TrainedFold": "runs",
    "trained_folds": "runs",
    "load_run": "runs",
    "image_table": "results",
    "score_table": "results",
    "overall_scores": "results",
    "paired_differences": "results",
    "paired_summary": "results",
    "describe_runs": "results",
    "image_scores": "evaluate",
    "predict_tile": "evaluate",
    "TASK_TITLES": "data.layout",
    "other_task": "strategies",
    "baseline_rows": "evaluate",
    "image_means": "results",
    "paired_verdicts": "results",
    "paper_comparison": "results",
    "checking": "exercises",
}
__all__ = ["__version__", *EXPORTS]


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module 'cosas_tutorial' has no attribute {name!r}")
    return getattr(import_module(f".{EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])
