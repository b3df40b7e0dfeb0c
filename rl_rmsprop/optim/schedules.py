"""Learning-rate schedules: the factor an update's lr is its base lr times."""

from __future__ import annotations

SCHEDULES = ("constant", "linear")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The factor on the base lr for an update made after ``step`` of ``total`` env steps.

    ``linear`` is Stable-Baselines3's ``progress_remaining`` (``1 - step / total``), which the
    zoo's ``lin_<lr>`` multiplies by its initial rate; it is computed in double precision,
    as SB3 does, so a scheduled lr is the same number as SB3's.

    Raises:
        ValueError: an unknown schedule.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - float(step) / float(total)
    raise ValueError(f"unknown lr schedule {schedule!r} (one of {', '.join(SCHEDULES)})")
