"""Agents (A2C, DQN), networks and rollout storage.

Agents receive their optimizer; they never build it. ``a2c`` and ``dqn`` hold the losses,
``a2c_numpy`` the NumPy A2C engine for MLPs on the CPU, ``population`` the batched members.
"""
