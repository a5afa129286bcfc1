"""The check cells' context manager: one line per outcome, the student's own errors raised."""

from __future__ import annotations

import pytest

from cosas_tutorial.exercises import checking


def stub():
    raise NotImplementedError


def test_a_passing_check_says_so(capsys):
    with checking("sum"):
        assert sum([1, 2]) == 3
    assert capsys.readouterr().out == "✓ sum: passed\n"


def test_a_stub_is_not_done_and_the_cell_does_not_raise(capsys):
    with checking("sum"):
        assert stub() == 3
    assert capsys.readouterr().out.startswith("✗ sum: not done yet (")


def test_a_wrong_answer_fails_with_the_asserts_message(capsys):
    with checking("sum"):
        raise AssertionError("expected 4")
    assert capsys.readouterr().out == "✗ sum: failed: expected 4\n"


def test_a_broken_answer_raises_as_usual():
    with pytest.raises(TypeError), checking("sum"):
        sum([1, "2"])
