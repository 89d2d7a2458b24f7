"""Interleaved timing, the machine's GEMM rate, FLOP counts and the machine description.

On a shared machine a run of A then a run of B measures the load as much as the code, so every
comparison here is interleaved: each round calls every contender once, in a rotating order, and
the statistics are medians over rounds. Each contender's per-round times are kept too, so a
ratio can be taken within each round (the contenders of one round ran back to back, under the
same load) and its spread reported. Warm-up calls (which include compilation) are excluded;
compile time is measured separately by the runners. Wall time and process CPU time are both kept:
CPU time is less sensitive to other processes taking turns on the cores. So are the memory pages
each call first touched (minor page faults, where the OS reports them): a call that allocates its
buffers afresh pays for every page, a cost that depends on the allocator, not the code (README,
"Allocator settings").
"""

import os
import platform
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

try:
    import resource
except ImportError:  # absent on Windows: page faults are then not counted
    resource = None

GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}


def cores() -> int:
    """The cores this process may run on (what XLA:CPU's thread pool uses)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def flops(cell: str, batch: int, steps: int, inputs: int, hidden: int, mode: str) -> float:
    """Matmul FLOPs, ``2 B T (D + H) G H`` forward; backward counts twice that (dX and dW)."""
    forward = 2.0 * batch * steps * (inputs + hidden) * GATES[cell] * hidden
    return forward if mode == "forward" else 3.0 * forward


def _minor_faults() -> int | None:
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved(
    functions: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, dict]:
    """Time each zero-argument function ``rounds`` times, interleaved, after ``warmup`` calls.

    Returns:
      ``{name: {"median_ms", "min_ms", "cpu_median_ms", "page_faults", "rounds", "round_ms"}}``,
      ``round_ms`` the wall time of every round in order (for :func:`paired_ratios`),
      ``page_faults`` the median count of minor page faults per call (``None`` where the OS
      does not count them; one fault maps a 4 KiB page, or a 2 MiB one under huge pages).
    """
    names = list(functions)
    for name in names:
        for _ in range(warmup):
            functions[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    faults = {name: [] for name in names}
    for index in range(rounds):
        # Rotate the order so no contender always runs right after the same neighbour.
        for name in names[index % len(names) :] + names[: index % len(names)]:
            start_faults = _minor_faults()
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            functions[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
            if start_faults is not None:
                faults[name].append(_minor_faults() - start_faults)
    return {
        name: {
            "median_ms": 1e3 * float(np.median(wall[name])),
            "min_ms": 1e3 * float(np.min(wall[name])),
            "cpu_median_ms": 1e3 * float(np.median(cpu[name])),
            "page_faults": float(np.median(faults[name])) if faults[name] else None,
            "rounds": rounds,
            "round_ms": [round(1e3 * seconds, 3) for seconds in wall[name]],
        }
        for name in names
    }


def paired_ratios(reference: Mapping, stats: Mapping) -> dict | None:
    """Quartiles of ``reference``'s time over ``stats``'s time taken round by round.

    Both are :func:`interleaved` statistics of the same run; within a round the two ran back to
    back, so each round's ratio cancels the load the machine had then. Returns ``{"q25",
    "q75"}`` of the per-round ratios (> 1: ``stats`` was faster), or ``None`` when either lacks
    per-round times or their round counts differ.
    """
    ours, theirs = stats.get("round_ms"), reference.get("round_ms")
    if not ours or not theirs or len(ours) != len(theirs):
        return None
    ratios = np.asarray(theirs, float) / np.asarray(ours, float)
    q25, q75 = np.percentile(ratios, [25, 75])
    return {"q25": float(q25), "q75": float(q75)}


def gemm_rate(size: int, rounds: int, device: str = "cpu") -> dict:
    """GFLOP/s of a ``size x size`` float32 matmul in XLA (jit) and PyTorch, interleaved."""
    import torch

    a = jax.device_put(jnp.ones((size, size), jnp.float32) / size)
    matmul = jax.jit(jnp.matmul)
    torch_device = "cuda" if device == "gpu" else "cpu"
    t = torch.ones(size, size, device=torch_device) / size

    def torch_matmul():
        torch.matmul(t, t)
        if device == "gpu":
            torch.cuda.synchronize()

    times = interleaved(
        {"jax": lambda: matmul(a, a).block_until_ready(), "torch": torch_matmul}, rounds
    )
    work = 2.0 * size**3
    rates = {f"{name}_gflops": work / (1e-3 * t["median_ms"]) / 1e9 for name, t in times.items()}
    return {"size": size, **rates, "best_gflops": max(rates.values())}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


# Environment variables that change how the process allocates memory: glibc's tunables and
# MALLOC_*_ settings, jemalloc's MALLOC_CONF, tcmalloc's TCMALLOC_*, macOS's Malloc*, and
# LD_PRELOAD (which can swap the allocator). Each call of a compiled program allocates its
# temporaries afresh; glibc serves large ones with fresh pages, each faulting on its first touch,
# and in this project's VM those faults are a large share of a forward+backward (README,
# "Allocator settings"). Settings that change this change every framework's times, unequally.
ALLOCATOR_VARIABLES = ("GLIBC_TUNABLES", "LD_PRELOAD")
ALLOCATOR_PREFIXES = ("MALLOC_", "TCMALLOC_", "Malloc")


def is_allocator_variable(name: str) -> bool:
    return name in ALLOCATOR_VARIABLES or name.startswith(ALLOCATOR_PREFIXES)


def allocator_environment() -> dict:
    """The allocator variables set in this process's environment (non-empty), ``{name: value}``,
    sorted by name."""
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if value and is_allocator_variable(name)
    }


def machine() -> dict:
    """CPU model and vector extensions, cores, load, versions of every framework benchmarked,
    XLA flags and the allocator settings in the environment."""
    import equinox
    import flax
    import jaxlib
    import torch

    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": cores(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "jax_devices": [getattr(d, "device_kind", str(d)) for d in jax.devices()],
        "versions": {
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "torch": torch.__version__,
            "flax": flax.__version__,
            "equinox": equinox.__version__,
            "numpy": np.__version__,
        },
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "allocator": allocator_environment(),
    }
