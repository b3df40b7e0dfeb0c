"""optim.schedules: the factor on an update's base learning rate."""

from __future__ import annotations

import pytest

from rl_rmsprop.optim.schedules import lr_factor


def test_constant_is_one_and_linear_is_sb3s_progress_remaining():
    assert [lr_factor("constant", s, 100) for s in (0, 50, 100)] == [1.0, 1.0, 1.0]
    assert [lr_factor("linear", s, 200) for s in (0, 50, 200)] == [1.0, 0.75, 0.0]
    # the same double-precision number as SB3's 1.0 - float(num_timesteps) / float(total)
    assert lr_factor("linear", 40, 200_000) * 0.00083 == (1.0 - 40 / 200_000) * 0.00083


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown lr schedule 'cosine'"):
        lr_factor("cosine", 1, 2)
