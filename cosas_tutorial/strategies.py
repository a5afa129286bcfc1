"""The three training strategies of the paper behind one interface and one registry.

A strategy turns "the training images of this task's fold" and "the training images of the
other task" into a list of stages; each stage trains the same model further on its images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .data.layout import Sample


@dataclass(frozen=True)
class Stage:
    name: str
    samples: tuple[Sample, ...]


class Strategy:
    """Base class: ``stages`` says what to train on, in order."""

    name: str = ""
    uses_other_task: bool = False
    description: str = ""

    def stages(self, fold_train: Sequence[Sample], other_task: Sequence[Sample]) -> list[Stage]:
        raise NotImplementedError


class Standard(Strategy):
    name = "standard"
    description = "train on this task's three domains"

    def stages(self, fold_train, other_task):
        return [Stage("train", tuple(fold_train))]


class Union(Strategy):
    name = "union"
    uses_other_task = True
    description = "train on task 1 ∪ task 2"

    def stages(self, fold_train, other_task):
        return [Stage("train", tuple(fold_train) + tuple(other_task))]


class CrossTask(Strategy):
    name = "cross-task"
    uses_other_task = True
    description = "pretrain on the other task, then fine-tune on this one"

    def stages(self, fold_train, other_task):
        return [Stage("pretrain", tuple(other_task)), Stage("finetune", tuple(fold_train))]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Standard(), Union(), CrossTask())}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def other_task(task: str) -> str:
    return {"task1": "task2", "task2": "task1"}[task]
