"""rl_rmsprop: reinforcement learning around an exact, vectorized, observable RMSprop."""

__version__ = "0.1.0"
