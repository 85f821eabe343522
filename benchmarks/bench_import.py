"""Start-up cost: ``import instanseg_scnp`` and ``instanseg-scnp --help`` against ``import torch``.

Each command runs in a fresh interpreter, interleaved, ``--repeats`` times; the
script prints the median wall time of each and its ratio to ``import torch``
(the floor: the operator is torch). Run: ``python benchmarks/bench_import.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import instanseg_scnp": [sys.executable, "-c", "import instanseg_scnp"],
    "instanseg-scnp --help": [sys.executable, "-m", "instanseg_scnp", "--help"],
    "instanseg-scnp train --help": [sys.executable, "-m", "instanseg_scnp", "train", "--help"],
}


def _cpu() -> str:
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command (default: 7)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    print(f"{_cpu()}, {os.cpu_count()} cores, Python {platform.python_version()}, median of {args.repeats} runs")
    floor = statistics.median(times["import torch"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:30s} {median:6.2f} s   {median / floor:4.2f}x import torch")


if __name__ == "__main__":
    main()
