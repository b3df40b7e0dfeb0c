"""The exceptions that end a command with one line, and the exit status each one means.

A user mistake (:class:`UserError`) exits 2 and leaves nothing half-written; a failure during
training (:class:`TrainingFailed` and its kinds) exits 1 and leaves a run folder that
``--resume`` can continue from its last checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from agents.rollout import WORKER_DIED, EnvStepFailed


class UserError(Exception):
    """A mistake in the user's input: reported as one line, exit status 2."""

    def __init__(self, message: str) -> None:
        # One line whatever the message embeds (an OSError text, a repr with newlines).
        super().__init__(" ".join(str(message).split()))


class TrainingFailed(Exception):  # noqa: N818 (a stop, reported as one line)
    """Training started and could not go on: one line, exit status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class Diverged(TrainingFailed):
    """Too many updates in a row had non-finite gradients, or the parameters became non-finite."""


class EnvCrashed(TrainingFailed):
    """An environment raised an error or its worker process died."""


def as_training_failure(error: BaseException, where: Path | None, at: str = "") -> TrainingFailed:
    """What an error raised during training means, as its one-line failure.

    Args:
        error: the environment's error (:class:`~agents.rollout.EnvStepFailed`, a dead
            worker), a write that failed (``OSError``), or a failure already.
        where: the folder being written, named when the OS error names no file.
        at: where in training it happened (`` at step 1,234``), appended to the line.
    """
    if isinstance(error, TrainingFailed):
        return error
    if isinstance(error, (EnvStepFailed, *WORKER_DIED)):
        return EnvCrashed(f"{str(error) or type(error).__name__}{at}")
    if isinstance(error, OSError):
        name = error.filename or where
        reason = error.strerror or error
        return TrainingFailed(f"cannot write {name} ({reason}){at}; free space or fix permissions")
    return TrainingFailed(f"{type(error).__name__}: {error}")
