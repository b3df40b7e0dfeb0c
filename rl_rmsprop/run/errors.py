"""The exceptions that end a command with one line, and the exit status each one means.

A user mistake (:class:`UserError`) exits 2 and leaves nothing half-written; a failure during
training (:class:`TrainingFailed` and its kinds) exits 1 and leaves a run folder that
``--resume`` can continue from its last checkpoint.
"""

from __future__ import annotations


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
