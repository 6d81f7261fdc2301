"""Every row of the bad-input audit (tests/bad_inputs.py, docs/reliability.md) gets what it
should: a clear error naming the problem and the fix, or its documented behaviour."""

import pytest

from bad_inputs import CASES, classify, passes

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared CPU


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_clear_answer(case, tmp_path):
    outcome, message = classify(case, tmp_path)
    wanted = "a clear error" + (f" matching {case.says!r}" if case.says else "") if case.expect == "error" else "no error"
    assert passes(case, outcome), f"{case.name}: {outcome} ({message}); wanted {wanted}"
