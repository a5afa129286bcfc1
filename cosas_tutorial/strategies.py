"""The training strategies of the paper behind one interface and one registry.

A strategy turns "the training images of this task's fold" and "the training images of the
other task" into a list of stages; each stage trains the same model further on its images.
A strategy may also change the loss the training step minimises (:meth:`Strategy.loss`).

Everything that lists strategies — the command line's choices, the tables' row order, the
figures' colours — reads :data:`STRATEGIES`, so a new strategy is one class::

    @register
    class UnionThenFinetune(Strategy):
        name = "union-then-finetune"
        uses_other_task = True
        description = "train on both tasks, then fine-tune on this one"

        def stages(self, fold_train, other_task):
            both = tuple(fold_train) + tuple(other_task)
            return [Stage("union", both), Stage("finetune", tuple(fold_train))]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .data.layout import Sample

if TYPE_CHECKING:  # torch is imported where a loss is computed: `cosas data …` starts faster
    import torch

# The trivial predictors every table and figure puts beside the strategies (they need no
# training: cosas_tutorial.evaluate.baseline_rows scores them).
BASELINES = ("all-tumour", "all-background")
# Colours of strategies registered without one, in turn (seaborn's "deep" after the three).
SPARE_COLOURS = ("#C44E52", "#8172B3", "#937860", "#DA8BC3", "#CCB974", "#64B5CD")


@dataclass(frozen=True)
class Stage:
    name: str
    samples: tuple[Sample, ...]


class Strategy:
    """Base class: ``stages`` says what to train on, in order; ``loss`` what to minimise."""

    name: str = ""
    uses_other_task: bool = False
    description: str = ""
    colour: str | None = None  # in figures; None: one of SPARE_COLOURS

    def stages(self, fold_train: Sequence[Sample], other_task: Sequence[Sample]) -> list[Stage]:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The paper's loss, binary cross-entropy on the logits; override to change it."""
        from torch.nn import functional as F

        return F.binary_cross_entropy_with_logits(logits, masks)


STRATEGIES: dict[str, Strategy] = {}  # in display order: the order of registration


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: add a strategy to :data:`STRATEGIES`. Its name must be new, unless the
    same class is defined again (a notebook cell run twice), which replaces the first."""
    taken = STRATEGIES.get(cls.name)
    redefined = taken is not None and type(taken).__qualname__ == cls.__qualname__
    if not cls.name or cls.name in BASELINES or (taken is not None and not redefined):
        raise ValueError(f"a strategy needs a name of its own, got {cls.name!r}")
    STRATEGIES[cls.name] = cls()
    return cls


@register
class Standard(Strategy):
    name = "standard"
    description = "train on this task's three domains"
    colour = "#4C72B0"

    def stages(self, fold_train, other_task):
        return [Stage("train", tuple(fold_train))]


@register
class Union(Strategy):
    name = "union"
    uses_other_task = True
    description = "train on task 1 ∪ task 2"
    colour = "#DD8452"

    def stages(self, fold_train, other_task):
        return [Stage("train", tuple(fold_train) + tuple(other_task))]


@register
class CrossTask(Strategy):
    name = "cross-task"
    uses_other_task = True
    description = "pretrain on the other task, then fine-tune on this one"
    colour = "#55A868"

    def stages(self, fold_train, other_task):
        return [Stage("pretrain", tuple(other_task)), Stage("finetune", tuple(fold_train))]


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def display_order(name: str) -> tuple[int, str]:
    """Sort key of tables and figures: the strategies in registration order, then the trivial
    baselines, then any other name."""
    known = (*STRATEGIES, *BASELINES)
    return (known.index(name) if name in known else len(known), name)


def strategy_colour(name: str) -> str:
    """A strategy's colour in figures: its own, else a spare one by its place in the registry."""
    strategy = STRATEGIES.get(name)
    if strategy is not None and strategy.colour:
        return strategy.colour
    uncoloured = [n for n, s in STRATEGIES.items() if not s.colour]
    index = uncoloured.index(name) if name in uncoloured else len(uncoloured)
    return SPARE_COLOURS[index % len(SPARE_COLOURS)]


def other_task(task: str) -> str:
    return {"task1": "task2", "task2": "task1"}[task]
