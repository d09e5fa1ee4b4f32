"""What two ways of taking a training step cost in time and memory, measured the same way for each
(benchmarks/step_in_backward.py and benchmarks/tiled_mlp.py use it).

`measure` runs in a worker process: the median wall time of steps warmup+1..steps, then the peak
of one more step. On CPU that peak is the CPU allocator's live bytes over the step, from
torch.profiler's [memory] events (as benchmarks/memory_estimate.py measures), plus the weights and
the optimizer state alive before it; on CUDA torch.cuda.max_memory_allocated() after a reset.
`compare` starts the workers, interleaved (a b a b ...), without and with gradient checkpointing,
and prints the medians over the repeats and the ratios b / a.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any, Callable


def measure(step: Callable[[], None], model: Any, optimizer: Any, steps: int, warmup: int, device: Any) -> dict[str, float]:
    """The median time of the measured steps and the peak bytes of one more step (see the module docstring)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    times = []
    for i in range(steps):
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        peak = torch.cuda.max_memory_allocated()
    else:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        memory = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
        live = peak = 0
        for _, nbytes in memory:
            live += nbytes
            peak = max(peak, live)
        # what lived before the step (weights, optimizer state) plus the step's own high-water mark
        peak += sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
            t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)
        )
    return {"step_s": statistics.median(times), "peak": peak}


def compare(script: str, base: dict[str, Any], runners: tuple[str, str], repeats: int) -> None:
    """Run `script --worker CONFIG` for each runner, interleaved `repeats` times, without and with gradient
    checkpointing (the config's "runner" and "checkpointing"), and print the table: the worker prints its
    `measure` as its last line of JSON."""
    mib = 1024**2
    first, second = runners
    print(f"{'checkpointing':<14} {'runner':<7} {'step ms (median of repeats)':>28} {'peak MiB':>9}")
    for checkpointing in (False, True):
        results: dict[str, list[dict]] = {first: [], second: []}
        for _ in range(repeats):
            for runner in runners:
                cfg = {**base, "runner": runner, "checkpointing": checkpointing}
                out = subprocess.run([sys.executable, script, "--worker", json.dumps(cfg)], check=True, capture_output=True, text=True)
                results[runner].append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {r: statistics.median(x["step_s"] for x in v) for r, v in results.items()}
        peak = {r: v[-1]["peak"] for r, v in results.items()}
        for runner in runners:
            print(f"{str(checkpointing):<14} {runner:<7} {med[runner] * 1000:28.1f} {peak[runner] / mib:9.1f}")
        print(f"{'':<14} {second}/{first}: time x{med[second] / med[first]:.3f}, peak x{peak[second] / peak[first]:.3f}")
