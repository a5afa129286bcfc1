"""The `check` cells of the book's code exercises.

A code exercise is a cell tagged ``exercise`` whose body the student writes (committed as a stub
that raises ``NotImplementedError``), followed by a cell tagged ``check``::

    with checking("Dice and IoU with the empty-mask rule"):
        assert abs(my_dice(pred, mask) - evaluate.dice_iou(pred, mask)[0]) < 1e-6

The check prints one line, never a traceback for the expected failures, so that "Run all" goes
on past an exercise not yet done: ``✓ … passed``, ``✗ … not done yet`` (the stub still raises)
or ``✗ … <what the assert says>``. Any other error is the student's code failing and is raised
as usual, with its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

PASSED, NOT_DONE, FAILED = "passed", "not done yet", "failed"


@contextmanager
def checking(title: str) -> Iterator[None]:
    """Run a check cell's asserts (the body of the ``with``) and print how they went."""
    try:
        yield
    except NotImplementedError:
        print(
            f"✗ {title}: {NOT_DONE} (the exercise cell above still raises NotImplementedError: "
            "write its body, run it, then run this cell again)"
        )
    except AssertionError as error:
        print(f"✗ {title}: {FAILED}: {error or 'a check did not hold'}")
    else:
        print(f"✓ {title}: {PASSED}")
