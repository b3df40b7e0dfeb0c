"""Agents (A2C, DQN), networks and rollout storage.

Agents receive their optimizer; they never build it. Filled in by the A2C/DQN work.
"""
