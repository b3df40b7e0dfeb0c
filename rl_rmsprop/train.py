"""``python -m rl_rmsprop.train``: the composition root.

argv -> Config -> one run (``rl_rmsprop.run.single``) or a population
(``rl_rmsprop.run.population_command``) -> exit status and the closing line. Tests call
:func:`main` in process.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from rl_rmsprop.cli import exit_cli  # first: the real package, wherever the user stands

# isort: split
from envs import EnvError
from rl_rmsprop.options import parse_config
from rl_rmsprop.run.errors import TrainingFailed, UserError
from rl_rmsprop.run.population_command import POPULATION_FILE, train_population
from rl_rmsprop.run.resume import population_resume_config, resume_config
from rl_rmsprop.run.signals import Interrupted
from rl_rmsprop.run.single import run
from rl_rmsprop.run.tracker import fmt_or_na


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user mistake, with a one-line message)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if any(a == "--resume" or a.startswith("--resume=") for a in argv):
            folder = Path(parse_config(argv).run.resume)
            if (folder / POPULATION_FILE).exists():
                return train_population(population_resume_config(argv, folder), resume=folder)
            cfg, run_dir = resume_config(argv)
            summary = run(cfg, resume=run_dir)
        else:
            cfg = parse_config(argv)
            if cfg.run.population:
                return train_population(cfg)
            summary = run(cfg)
    except (UserError, EnvError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        name = signal.Signals(e.signum).name
        print(
            f"stopped by {name} at step {e.step:,}; checkpoint written. Continue with: "
            f"python -m rl_rmsprop.train --resume {e.run_dir}",
            file=sys.stderr,
        )
        return 128 + e.signum
    except KeyboardInterrupt:
        print("stopped at once (second signal); resume from the last checkpoint", file=sys.stderr)
        return 130
    except TrainingFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ret, ev, sd = (
        fmt_or_na(summary[k])
        for k in ("episodic_return_mean100", "eval_return_mean", "eval_return_std")
    )
    print(
        f"done: {summary['total_steps']:,} steps in {summary['wall_time_s']:.1f} s "
        f"({summary['sps']:,.0f} SPS), return mean100 {ret}, eval {ev} +- {sd}, "
        f"solved at step {summary['solved_at_step'] or 'never'}; logs in {summary['run_dir']}"
    )
    return 0


if __name__ == "__main__":
    exit_cli(main())
