"""What ``python -m rl_rmsprop.compare`` is made of.

- :mod:`~rl_rmsprop.study.specs`: what a study trains (optimizer specs, seeds, run pairs);
- :mod:`~rl_rmsprop.study.runs`: training them (processes, populations, Ray) with progress;
- :mod:`~rl_rmsprop.study.progress`: the live progress line;
- :mod:`~rl_rmsprop.study.report`: what a study says (table, significance, plots, summary);
- :mod:`~rl_rmsprop.study.board`: its TensorBoard (aggregate runs, margin charts, HParams).
"""
