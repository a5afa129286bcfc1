"""The ``cosas`` command: data tiers, training, evaluation and the full strategy × task grid."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import (
    CHOICES,
    CONFIG_OPTIONS,
    PROFILES,
    PROTOCOLS,
    STAIN_HANDLING,
    WEIGHTS,
    RunConfig,
    get_profile,
)
from .data.layout import TASK_TITLES, TASKS
from .strategies import STRATEGIES

EPILOG = """examples:
  cosas data synthetic data/synthetic --tiles 24 --size 256 --shift 0.5
  cosas data check data/synthetic
  cosas data open-tissue data/open-tissue
  cosas train --data data/synthetic --task task1 --strategy cross-task \\
              --profile cpu --out runs/t1-ct
  cosas evaluate --run runs/t1-ct --data data/synthetic --tta
  cosas experiment --data data/synthetic --profile cpu --out runs/demo
  cosas ablation --data data/synthetic --profile cpu --out runs/ablation --tasks task1
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosas",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Domain generalisation for adenocarcinoma segmentation (COSAS 2024): "
        "FPN + MiT under standard, union and cross-task training.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="make, fetch or validate a COSAS-layout data tree")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = data_commands.add_parser(
        "check", help="validate every image/mask pair of a COSAS-layout tree (exit 1 on problems)"
    )
    check.add_argument("dir", type=Path)
    synthetic = data_commands.add_parser(
        "synthetic", help="generate the synthetic H&E tier (both tasks, held-out domains)"
    )
    synthetic.add_argument("out", type=Path)
    synthetic.add_argument("--tiles", type=int, default=24, help="tiles per domain (24)")
    synthetic.add_argument("--size", type=int, default=256, help="tile side in pixels (256)")
    synthetic.add_argument(
        "--shift", type=float, default=0.5, help="distance between domains, 0 (none) … 1 (0.5)"
    )
    synthetic.add_argument("--seed", type=int, default=0)
    open_tissue = data_commands.add_parser(
        "open-tissue",
        help="download the open real-tissue samples (sha256-checked) as a "
        "COSAS-like tree, one domain per source",
    )
    open_tissue.add_argument("out", type=Path)
    open_tissue.add_argument(
        "--domains",
        nargs="+",
        metavar="DOMAIN",
        help="only these sources (default: all five; see data/README.md for their licences)",
    )
    open_tissue.add_argument(
        "--base-url",
        help="mirror of the raw-file host (default: $COSAS_OPEN_TISSUE_URL, else the public host)",
    )

    def run_options(p, fields=CONFIG_OPTIONS):
        """The options every training command shares: data, profile, the profile's fields
        that may be changed (one option each, from RunConfig), weights, device, resume."""
        p.add_argument("--data", type=Path, required=True, help="COSAS-layout data tree")
        p.add_argument("--profile", choices=PROFILES, default="cpu", help="(cpu)")
        for name in fields:
            kind = type(getattr(RunConfig(), name))
            flag = "--" + name.replace("_", "-")
            extra = {"choices": CHOICES[name]} if name in CHOICES else {"type": kind}
            p.add_argument(flag, help=f"override the profile's {name}", **extra)
        p.add_argument(
            "--weights",
            choices=WEIGHTS,
            help="encoder initialisation: imagenet, none (random) or auto (the profile's, "
            "random if they cannot be downloaded); default: the profile's, required",
        )
        p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: CUDA if available)")
        p.add_argument(
            "--resume",
            action="store_true",
            help="continue an interrupted run from its last finished epoch; a finished run is "
            "reused (only one made with the same settings and data)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--out", type=Path, required=True, help="output folder")

    def grid_options(p, protocols=PROTOCOLS):
        p.add_argument("--tasks", nargs="+", choices=TASKS)
        p.add_argument(
            "--protocol",
            choices=protocols,
            default=protocols[0],
            help="cv: k-fold cross-validation within the training domains (unseen domains from "
            "a COSAS24-TestSet); lodo: leave each training domain out in turn "
            f"({protocols[0]})",
        )
        p.add_argument("--seeds", type=int, default=1, help="runs per strategy, seeds --seed … (1)")

    train = commands.add_parser("train", help="train one strategy on one task")
    run_options(train)
    train.add_argument("--task", choices=TASKS, required=True)
    train.add_argument("--strategy", choices=tuple(STRATEGIES), required=True)
    train.add_argument("--protocol", choices=PROTOCOLS, default="cv", help="(cv)")

    evaluate = commands.add_parser(
        "evaluate", help="score a trained run on its task's held-out domains"
    )
    evaluate.add_argument("--run", type=Path, required=True)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--tta", action="store_true", help="flip/rotation test-time augmentation")
    evaluate.add_argument("--json", type=Path, help="also write the records here")
    evaluate.add_argument("--device")

    experiment = commands.add_parser(
        "experiment", help="every strategy × task: train, evaluate, table, figure"
    )
    run_options(experiment)
    grid_options(experiment)
    experiment.add_argument("--strategies", nargs="+", choices=tuple(STRATEGIES))

    ablation = commands.add_parser(
        "ablation",
        help="standard vs cross-task × stain handling × TTA, scored on unseen domains",
        description="Train every strategy × stain handling (none, HED jitter, Macenko), score "
        "each model with test-time augmentation off and on, and write ablation.jsonl and "
        "ablation.md (mean ± std per unseen domain). Unseen domains: the tree's held-out "
        "domains (cv), or leave-one-domain-out (lodo; auto: lodo where a task has no "
        "COSAS24-TestSet, as in the open-tissue tier).",
    )
    run_options(ablation, [n for n in CONFIG_OPTIONS if n not in ("stain_aug", "stain_norm")])
    grid_options(ablation, ("auto", *PROTOCOLS))
    ablation.add_argument(
        "--strategies", nargs="+", choices=tuple(STRATEGIES), help="(standard cross-task)"
    )
    ablation.add_argument(
        "--stains", nargs="+", choices=tuple(STAIN_HANDLING), help="(none hed macenko)"
    )
    ablation.add_argument("--limit", type=int, help="at most this many tiles per domain")
    ablation.add_argument(
        "--held-out", nargs="+", metavar="DOMAIN", help="lodo: hold out only these domains"
    )

    commands.add_parser("info", help="print versions and the device that would be used")
    return parser


def _config(args):
    overrides = {name: getattr(args, name, None) for name in CONFIG_OPTIONS}
    config = get_profile(args.profile, **{k: v for k, v in overrides.items() if v is not None})
    if args.weights is None:
        return config
    from .model import resolve_weights  # imported here to keep `cosas data …` start-up light

    return resolve_weights(config, args.weights)


def _device(name):
    from .env import pick_device

    return pick_device(name)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as err:
        print(f"cosas: error: {err}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.command == "data":
        return _data(args)
    if args.command == "info":
        from .env import describe

        for key, value in describe().items():
            print(f"{key:>15}: {value}")
        return 0

    if args.command == "ablation":
        return _ablation(args)

    from .experiment import evaluate_run, run_experiment, train_run
    from .results import describe_runs, score_table

    if args.command == "train":
        records = train_run(
            args.data,
            args.task,
            args.strategy,
            _config(args),
            args.out,
            _device(args.device),
            args.resume,
            not args.quiet,
            args.protocol,
        )
    elif args.command == "evaluate":
        records = evaluate_run(args.run, args.data, args.tta or None, _device(args.device))
        if args.json:
            args.json.write_text(json.dumps(records, indent=1))
    else:
        from .viz import plot_strategy_scores

        records = run_experiment(
            args.data,
            _config(args),
            args.out,
            args.strategies,
            args.tasks,
            _device(args.device),
            args.resume,
            not args.quiet,
            args.protocol,
            args.seeds,
        )
        tables = [
            score_table(records, task).to_markdown(index=False)
            for task in TASKS
            if any(r["task"] == task for r in records)
        ]
        heading = f"COSAS score, mean ± std over images ({describe_runs(records)})"
        (args.out / "table.md").write_text("\n\n".join([heading, *tables]) + "\n")
        figure = plot_strategy_scores(records)
        figure.savefig(args.out / "scores.png", dpi=120, bbox_inches="tight")
        print(
            f"wrote {args.out / 'results.jsonl'}, {args.out / 'table.md'}, "
            f"{args.out / 'scores.png'}"
        )
    for task in TASKS:
        if any(r["task"] == task for r in records):
            print(f"\n{task} ({TASK_TITLES[task]}), COSAS score (mean ± std over images):")
            print(score_table(records, task).drop(columns="task").to_string(index=False))
    return 0


def _ablation(args) -> int:
    from .ablation import ABLATION_FILE, TABLE_FILE, ablation_effects, ablation_table, run_ablation

    chosen = {"strategies": args.strategies, "stains": args.stains}
    records = run_ablation(
        args.data,
        _config(args),
        args.out,
        args.tasks,
        protocol=args.protocol,
        limit=args.limit,
        device=_device(args.device),
        resume=args.resume,
        progress=not args.quiet,
        held_out=args.held_out,
        seeds=args.seeds,
        **{k: v for k, v in chosen.items() if v},
    )
    print(ablation_table(records).to_string(index=False))
    print()
    print(ablation_effects(records).to_string(index=False))
    print(f"\nwrote {args.out / ABLATION_FILE}, {args.out / TABLE_FILE}")
    return 0


def _data(args) -> int:
    if args.data_command == "check":
        from .data.cosas import check

        report = check(args.dir)
        print(report.format())
        return 0 if report.ok else 1
    if args.data_command == "synthetic":
        from .data.synthetic import generate

        root = generate(
            args.out,
            tiles=args.tiles,
            size=args.size,
            shift=args.shift,
            seed=args.seed,
            progress=True,
        )
    else:
        from .data.open_tissue import ENV_VAR, DownloadError, prepare

        try:
            root = prepare(args.out, base_url=args.base_url, domains=args.domains, progress=True)
        except DownloadError as err:  # main reports it in one line, without a traceback
            raise RuntimeError(
                f"open-tissue download failed: {err} (set {ENV_VAR} or --base-url "
                "to a mirror of the files)"
            ) from err
    print(f"data tree ready: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
