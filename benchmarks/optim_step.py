"""Optimizer step time: torch.optim.RMSprop (foreach off and on) versus rl_rmsprop, side by side.

Three networks after real backward passes: the CartPole MLP (4-64-64-2), the Nature CNN
(Atari, about 1.7M parameters) and a 40-layer 256-wide MLP. The three optimizers take turns
within every repetition, so machine noise hits them alike. Prints the median step time, our
speed-up over torch's faster path, and a memory-copy roofline: the time to copy the bytes a
fused RMSprop step must move (read p, g, v; write p, v).

    python benchmarks/optim_step.py [--device cpu|cuda] [--reps 200] [--impl auto] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from agents.dqn import CnnQNetwork
from rl_rmsprop.optim import RMSprop


def cartpole_mlp() -> tuple[nn.Module, torch.Tensor]:
    net = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
    return net, torch.randn(40, 4)


def nature_cnn() -> tuple[nn.Module, torch.Tensor]:
    # The project's own Atari Q-network (the same parameter shapes as DeepMind's).
    return CnnQNetwork(4, 18), torch.randn(8, 4, 84, 84)


def deep_mlp() -> tuple[nn.Module, torch.Tensor]:
    layers: list[nn.Module] = []
    for _ in range(40):
        layers += [nn.Linear(256, 256), nn.Tanh()]
    return nn.Sequential(*layers[:-1]), torch.randn(32, 256)


NETS: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "cartpole-mlp": cartpole_mlp,
    "nature-cnn": nature_cnn,
    "mlp-40x256": deep_mlp,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_roofline(numel: int, device: torch.device, reps: int) -> float:
    """Median seconds to copy 5 * numel float32 (the bytes of a fused RMSprop step)."""
    # A copy reads n and writes n elements: moving 5 * numel elements takes a 2.5 * numel copy.
    n = int(2.5 * numel)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_net(name: str, device: torch.device, reps: int, impl: str) -> dict[str, float]:
    torch.manual_seed(0)
    base, x = NETS[name]()
    base, x = base.to(device), x.to(device)
    contenders: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
    kw = dict(lr=1e-4, alpha=0.99, eps=1e-5)
    for label, make in (
        ("torch", lambda p: torch.optim.RMSprop(p, foreach=False, **kw)),
        ("torch-foreach", lambda p: torch.optim.RMSprop(p, foreach=True, **kw)),
        ("ours", lambda p: RMSprop(p, impl=impl, **kw)),
    ):
        net = _clone(base)
        t0 = time.perf_counter()
        contenders[label] = (net, make(net.parameters()))
        if label == "ours":
            setup = time.perf_counter() - t0
    step_t: dict[str, list[float]] = {k: [] for k in contenders}
    iter_t: dict[str, list[float]] = {k: [] for k in contenders}
    for rep in range(reps + 10):
        for label, (net, opt) in contenders.items():
            _sync(device)
            t0 = time.perf_counter()
            opt.zero_grad()
            net(x).square().mean().backward()
            _sync(device)
            t1 = time.perf_counter()
            opt.step()
            _sync(device)
            t2 = time.perf_counter()
            if rep >= 10:  # warm-up
                step_t[label].append(t2 - t1)
                iter_t[label].append(t2 - t0)
    numel = sum(p.numel() for p in base.parameters())
    out = {f"{k}_step": statistics.median(v) for k, v in step_t.items()}
    out.update({f"{k}_iter": statistics.median(v) for k, v in iter_t.items()})
    out["numel"] = numel
    out["tensors"] = len(list(base.parameters()))
    out["roofline"] = copy_roofline(numel, device, reps)
    out["setup"] = setup
    out["impl"] = contenders["ours"][1].impl
    return out


def _clone(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--impl", default="auto", choices=["auto", "eager", "compiled"])
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", {args.reps} steps each, median"
    )
    header = (
        f"{'network':<13} {'params':>9} {'tensors':>7} {'torch':>9} {'foreach':>9} "
        f"{'ours':>9} {'speed-up':>8} {'roofline':>9} {'ours impl':>9} "
        f"{'iter torch':>10} {'iter ours':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in args.nets.split(","):
        r = bench_net(name, device, args.reps, args.impl)
        best = min(r["torch_step"], r["torch-foreach_step"])
        print(
            f"{name:<13} {r['numel']:>9,} {r['tensors']:>7} {r['torch_step'] * 1e6:>7.0f}us "
            f"{r['torch-foreach_step'] * 1e6:>7.0f}us {r['ours_step'] * 1e6:>7.0f}us "
            f"{best / r['ours_step']:>7.1f}x {r['roofline'] * 1e6:>7.0f}us {r['impl']:>9} "
            f"{min(r['torch_iter'], r['torch-foreach_iter']) * 1e6:>8.0f}us "
            f"{r['ours_iter'] * 1e6:>7.0f}us",
            flush=True,
        )
    print(
        "speed-up = torch's faster step (foreach off or on) / ours; roofline = copying the "
        "bytes a fused step moves; iter = zero_grad + forward + backward + step"
    )


if __name__ == "__main__":
    main()
