#!/usr/bin/env python3
"""Performance budgets of irsa-agent, measured on the release binary.

- `apply --check` on a node that is already converged (what Ansible runs on
  every play): median under 5 ms;
- `detect`: median under 5 ms;
- peak resident memory (RSS) of every measured command under 20 MB;
- the size of the stripped release binary (reported, no budget).

Each fixture of tests/fixtures is copied to a temporary directory and
converged once with `apply --no-restart`; then each command runs RUNS times
(after WARMUP runs). A run is timed from posix_spawn to wait4 (the spawn
itself is part of what a caller pays), and wait4's rusage gives its peak RSS.

Usage: cargo build --release && benches/budgets.py [RUNS]   (default 200)
       BIN=path/to/irsa-agent benches/budgets.py
Exits 1 when a budget is exceeded. Not a test: timings on a shared machine
are noisy, so this is run by hand and its output recorded in
benches/RESULTS.md.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(HERE, "target", "release", "irsa-agent"))
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
WARMUP = 20
ISSUER = "https://oidc.example.com/budget"
TIME_BUDGET_MS = 5.0
RSS_BUDGET_MB = 20.0
FIXTURES = [
    "kubeadm-default",
    "minikube-default",
    "microk8s-default",
    "k3s-default",
    "rke2-default",
    "k0s-default",
]


def run_once(argv):
    """(wall seconds, peak RSS in KiB, exit status, CPU seconds) of one run."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2),
        ]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - start
    finally:
        os.close(devnull)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status), cpu


def measure(argv):
    for _ in range(WARMUP):
        run_once(argv)
    walls, rss, cpus = [], [], []
    for _ in range(RUNS):
        wall, maxrss, code, cpu = run_once(argv)
        if code != 0:
            sys.exit(f"{' '.join(argv)} exited {code}")
        walls.append(wall * 1000)
        rss.append(maxrss / 1024)
        cpus.append(cpu * 1000)
    walls.sort()
    return {
        "median": statistics.median(walls),
        "p95": walls[int(len(walls) * 0.95) - 1],
        "min": walls[0],
        "rss": max(rss),
        "cpu": statistics.median(cpus),
    }


def main():
    if not os.access(BIN, os.X_OK):
        sys.exit(f"needs {BIN}: run cargo build --release (or set BIN)")
    size = os.path.getsize(BIN)
    stripped_copy = None
    if shutil.which("strip"):
        # The release profile strips symbols already; strip again to be sure
        # the number reported is the stripped size.
        fd, stripped_copy = tempfile.mkstemp()
        os.close(fd)
        shutil.copy(BIN, stripped_copy)
        os.system(f"strip '{stripped_copy}'")
        size = os.path.getsize(stripped_copy)
        os.unlink(stripped_copy)
    load = os.getloadavg()[0]
    print(f"binary: {BIN}")
    print(f"stripped size: {size / 1e6:.1f} MB ({size} bytes)")
    print(f"runs: {RUNS} after {WARMUP} warm-up, load average {load:.2f}, {os.cpu_count()} CPUs")
    print()
    print("| fixture | command | median | p95 | min | CPU (median) | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    over = []
    with tempfile.TemporaryDirectory() as work:
        for fixture in FIXTURES:
            root = os.path.join(work, fixture)
            shutil.copytree(os.path.join(HERE, "tests", "fixtures", fixture), root, symlinks=True)
            apply = [BIN, "--root", root, "apply", "--issuer", ISSUER]
            code = run_once(apply + ["--no-restart"])[2]
            if code != 0:
                sys.exit(f"converging {fixture} failed with exit {code}")
            for name, argv in (
                ("apply --check (converged)", apply + ["--check"]),
                ("detect", [BIN, "--root", root, "detect"]),
            ):
                r = measure(argv)
                print(
                    f"| {fixture} | `{name}` | {r['median']:.2f} ms | {r['p95']:.2f} ms "
                    f"| {r['min']:.2f} ms | {r['cpu']:.2f} ms | {r['rss']:.1f} MB |"
                )
                if r["median"] > TIME_BUDGET_MS:
                    over.append(f"{fixture} {name}: median {r['median']:.2f} ms > {TIME_BUDGET_MS} ms")
                if r["rss"] > RSS_BUDGET_MB:
                    over.append(f"{fixture} {name}: peak RSS {r['rss']:.1f} MB > {RSS_BUDGET_MB} MB")
    print()
    if over:
        print("OVER BUDGET:")
        for line in over:
            print(f"  {line}")
        sys.exit(1)
    print(f"within budget: every median under {TIME_BUDGET_MS} ms, every peak RSS under {RSS_BUDGET_MB} MB")


if __name__ == "__main__":
    main()
