"""Train/validation splits over a list of samples: stratified k-fold and leave-one-domain-out.

Both return indices into the list they are given, so they work on any sequence of objects with a
``domain`` attribute (:class:`~cosas_tutorial.data.layout.Sample` in practice).
"""

from __future__ import annotations

import random
from collections import defaultdict


def _indices_by_domain(samples) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        groups[sample.domain].append(index)
    return dict(sorted(groups.items()))


def kfold_by_domain(samples, k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """``k`` (train, val) index pairs; every fold holds about 1/k of every domain.

    Each domain's indices are shuffled with ``seed`` and dealt round-robin to the folds; the deal
    continues from one domain to the next, so fold sizes differ by at most one overall. Every
    index is in exactly one validation fold.
    """
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got k={k}")
    groups = _indices_by_domain(samples)
    if not groups:
        raise ValueError("no samples to split")
    for domain, indices in groups.items():
        if len(indices) < k:
            raise ValueError(
                f"domain {domain!r} has {len(indices)} samples, fewer than k={k} folds"
            )
    rng = random.Random(seed)
    val_folds: list[list[int]] = [[] for _ in range(k)]
    dealt = 0
    for indices in groups.values():
        shuffled = list(indices)
        rng.shuffle(shuffled)
        for index in shuffled:
            val_folds[dealt % k].append(index)
            dealt += 1
    folds = []
    for val in val_folds:
        held_out = set(val)
        folds.append(([i for i in range(len(samples)) if i not in held_out], sorted(val)))
    return folds


def leave_one_domain_out(samples) -> dict[str, tuple[list[int], list[int]]]:
    """For each domain: train on all other domains, validate on this one."""
    groups = _indices_by_domain(samples)
    if len(groups) < 2:
        raise ValueError(f"leave-one-domain-out needs at least 2 domains, got {list(groups)}")
    return {
        domain: ([i for i in range(len(samples)) if samples[i].domain != domain], list(val))
        for domain, val in groups.items()
    }
