"""Stratified k-fold and leave-one-domain-out splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosas_tutorial.data.layout import Sample
from cosas_tutorial.data.splits import kfold_by_domain, leave_one_domain_out

SIZES = {"colorectum": 12, "pancreas": 7, "stomach": 10}


def samples_of(sizes: dict[str, int]) -> list[Sample]:
    """Samples interleaved across domains, so that index order does not follow the domain."""
    out = []
    for i in range(max(sizes.values())):
        for domain, count in sizes.items():
            if i < count:
                path = Path(domain) / f"{i:03d}.png"
                out.append(Sample(path, path, "task1", domain, "train"))
    return out


@pytest.mark.parametrize("k", [2, 3, 5])
def test_kfold_partitions_without_leakage(k):
    samples = samples_of(SIZES)
    folds = kfold_by_domain(samples, k, seed=0)
    assert len(folds) == k
    every = set(range(len(samples)))
    seen: list[int] = []
    for train, val in folds:
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(every)
        assert train == sorted(train) and val == sorted(val)
        seen += val
    assert sorted(seen) == sorted(every)  # each index validated exactly once


@pytest.mark.parametrize("k", [2, 3, 5])
def test_kfold_is_stratified_by_domain(k):
    samples = samples_of(SIZES)
    folds = kfold_by_domain(samples, k, seed=1)
    for _, val in folds:
        for domain, count in SIZES.items():
            in_fold = sum(samples[i].domain == domain for i in val)
            assert count // k <= in_fold <= -(-count // k)
    sizes = [len(val) for _, val in folds]
    assert max(sizes) - min(sizes) <= 1


def test_kfold_is_deterministic_per_seed():
    samples = samples_of(SIZES)
    assert kfold_by_domain(samples, 5, seed=7) == kfold_by_domain(samples, 5, seed=7)
    assert kfold_by_domain(samples, 5, seed=7) != kfold_by_domain(samples, 5, seed=8)


def test_kfold_errors():
    samples = samples_of(SIZES)
    with pytest.raises(ValueError, match="k >= 2"):
        kfold_by_domain(samples, 1, seed=0)
    with pytest.raises(ValueError, match="'pancreas' has 7 samples, fewer than k=8"):
        kfold_by_domain(samples, 8, seed=0)
    with pytest.raises(ValueError, match="no samples"):
        kfold_by_domain([], 5, seed=0)


def test_leave_one_domain_out():
    samples = samples_of(SIZES)
    splits = leave_one_domain_out(samples)
    assert list(splits) == sorted(SIZES)
    for domain, (train, val) in splits.items():
        assert {samples[i].domain for i in val} == {domain}
        assert len(val) == SIZES[domain]
        assert domain not in {samples[i].domain for i in train}
        assert sorted(train + val) == list(range(len(samples)))


def test_leave_one_domain_out_needs_two_domains():
    with pytest.raises(ValueError, match="at least 2 domains"):
        leave_one_domain_out(samples_of({"colorectum": 4}))
