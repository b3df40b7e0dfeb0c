"""The algorithms' run loops: collect -> loss -> backward -> clip -> step -> metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import Tensor

from agents import a2c_numpy, dqn_numpy
from agents.a2c import a2c_loss
from agents.dqn import (
    dqn_loss,
    lazy_epsilon_greedy,
    linear_epsilon,
    polyak_update,
    td_targets,
)
from agents.population import sample_actions
from agents.replay import ReplaySample
from rl_rmsprop.config import Config
from rl_rmsprop.run.evaluation import no_grad
from rl_rmsprop.run.session import Session


def train_a2c(sess: Session) -> dict:
    """The A2C run loop: collect a rollout -> loss -> backward -> clip -> step -> metrics."""
    cfg, collector, tracker, model, opt = (
        sess.cfg,
        sess.collector,
        sess.tracker,
        sess.model,
        sess.opt,
    )
    engine = a2c_numpy.NumpyA2C(model) if sess.engine == "numpy" else None
    actor, noise = engine if engine is not None else model, sess.noise
    while collector.global_step < cfg.run.total_steps:
        rollout = collector.collect(lambda obs: sample_actions(actor, noise, obs), cfg.a2c.n_steps)
        if engine is not None:  # writes the gradients into .grad itself
            metrics = engine.gradients(rollout, cfg.a2c, cfg.learn.gamma)
        else:
            loss, metrics = a2c_loss(model, rollout, cfg.a2c, cfg.learn.gamma)
            opt.zero_grad()
            loss.backward()
        tracker.clip_and_step(metrics)
        tracker.record_episodes()
        sess.boundary()
    return tracker.summary()


TargetsFn = Callable[[ReplaySample], Tensor]
"""A replay sample -> its ``[B]`` TD targets (target network, gamma and the rule bound in)."""


def training_batches(
    sample: Callable[[int], ReplaySample], targets_of: TargetsFn, cfg: Config, axis: int = 0
) -> Iterator[tuple[ReplaySample, Tensor]]:
    """A training round's ``gradient_steps`` minibatches with their TD targets.

    The target network is fixed during a round (it changes only while collecting), so without
    Double DQN every minibatch is drawn at once and all targets come from one forward pass:
    the same distribution as drawing them one by one, for one large matrix product instead of
    ``gradient_steps`` small ones. Double DQN's targets use the online network, which changes
    after each gradient step, so they are computed per minibatch.

    Args:
        sample: draws that many transitions (a replay buffer's ``sample``).
        targets_of: a sample's TD targets.
        cfg: the run's configuration (batch size, gradient steps, Double DQN).
        axis: the transitions' axis: 0 for a single run, 1 for a population's ``[K, B]``.
    """
    size, steps = cfg.dqn.batch_size, cfg.dqn.gradient_steps
    if cfg.dqn.double_dqn:
        for _ in range(steps):
            batch = sample(size)
            yield batch, targets_of(batch)
        return
    big = sample(size * steps)
    targets = targets_of(big)
    for i in range(0, size * steps, size):
        rows = (slice(None),) * axis + (slice(i, i + size),)
        yield ReplaySample(*(t[rows] for t in big)), targets[rows]


def dqn_engine(
    sess: Session,
) -> tuple[Callable[[Tensor], Tensor], TargetsFn, Callable[[ReplaySample, Tensor], dict]]:
    """The run's Q-values for acting, TD targets and gradient step, by ``sess.engine``.

    The gradient step computes the TD loss of a minibatch and leaves its gradient in the
    parameters' ``.grad``; it returns the loss metrics.
    """
    cfg, q_net = sess.cfg, sess.model
    assert sess.dqn is not None
    target, dqn, gamma = sess.dqn.target, cfg.dqn, cfg.learn.gamma
    if sess.engine == "numpy":
        online, offline = dqn_numpy.NumpyQ(q_net), dqn_numpy.NumpyQ(target)

        def numpy_targets(b: ReplaySample) -> Tensor:  # the one target rule, NumPy Q-values
            return td_targets(
                b.rewards,
                b.next_obs,
                b.terminated,
                offline.q_values,
                online.q_values,
                gamma,
                double=dqn.double_dqn,
            )

        def numpy_step(batch: ReplaySample, targets: Tensor) -> dict:
            return online.gradients(batch, targets, dqn.loss, dqn.loss_reduction)

        return online.q_values, numpy_targets, numpy_step

    def torch_targets(b: ReplaySample) -> Tensor:
        return td_targets(
            b.rewards, b.next_obs, b.terminated, target, q_net, gamma, double=dqn.double_dqn
        )

    def torch_step(batch: ReplaySample, targets: Tensor) -> dict:
        loss, metrics = dqn_loss(q_net, batch, targets, dqn.loss, dqn.loss_reduction)
        sess.opt.zero_grad()
        loss.backward()
        return metrics

    return no_grad(q_net), torch_targets, torch_step


def train_dqn(sess: Session) -> dict:
    """The DQN run loop: act epsilon-greedily -> store valid transitions -> gradient steps."""
    cfg, collector, tracker, q_net = sess.cfg, sess.collector, sess.tracker, sess.model
    assert sess.dqn is not None
    dqn, run, parts = cfg.dqn, cfg.run, sess.dqn
    steps_per_round = max(1, dqn.train_freq // collector.num_envs)
    n_actions = int(sess.env.single_action_space.n)
    q_values, targets_of, gradient_step = dqn_engine(sess)
    while collector.global_step < run.total_steps:
        for _ in range(steps_per_round):
            eps = linear_epsilon(
                collector.global_step,
                run.total_steps,
                dqn.exploration_fraction,
                dqn.exploration_initial_eps,
                dqn.exploration_final_eps,
            )
            s = collector.step(lambda obs, e=eps: lazy_epsilon_greedy(q_values, obs, e, n_actions))
            parts.buffer.add(s.obs, s.next_obs, s.actions, s.rewards, s.terminated, s.valid)
            tracker.record_episodes()
            # SB3 counts the target interval in env steps and updates only while collecting,
            # so the target stays fixed through a training round's gradient steps.
            if collector.global_step // dqn.target_update_interval > parts.target_updates:
                parts.target_updates = collector.global_step // dqn.target_update_interval
                polyak_update(parts.target, q_net, dqn.tau)
        if collector.global_step >= dqn.learning_starts and len(parts.buffer) > 0:
            for batch, targets in training_batches(parts.buffer.sample, targets_of, cfg):
                metrics = gradient_step(batch, targets)
                tracker.clip_and_step({**metrics, "charts/epsilon": eps})
        sess.boundary()
    return tracker.summary()
