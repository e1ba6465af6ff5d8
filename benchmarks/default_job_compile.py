"""Does model.compile change the default job's time or its result? Seeds x compile settings.

    python benchmarks/default_job_compile.py [--seeds 0,1,2] [--compile auto,false] [overrides ...]

Runs the default job (benchmarks/default_job.py: `python train.py` on a fresh data directory) for
every seed and setting, and prints a table: per setting the mean wall time, fit time and test
CIDEr-D over the seeds with their spread (sd), then the CIDEr-D difference between the first two
settings with a t-interval over the seeds (paired by seed). One seed each (issue #25: 4.29
against 3.98) could not tell a compiled step's effect from a seed's.
"""

from __future__ import annotations

import argparse
import statistics

from default_job import run_default_job  # benchmarks/ is on sys.path when run as a script
from table import machine_row, print_table

# t(0.975, df) for the few seeds a device call affords (the GPU machine has no scipy)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--compile", default="auto,false", help="model.compile settings to compare")
    args, overrides = parser.parse_known_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.compile.split(",")
    results: dict[str, list[tuple[float, float, float]]] = {setting: [] for setting in settings}
    for seed in seeds:  # seed-major: a drift of the machine spreads over both settings
        for setting in settings:
            wall, metrics, _ = run_default_job([f"seed={seed}", f"model.compile={setting}", *overrides])
            results[setting].append((wall, metrics["train_time_s"], metrics["test"]["cider"]))
            print(f"seed {seed} compile={setting}: {wall:.0f} s, CIDEr-D {metrics['test']['cider']:.3f}",
                  flush=True)
    rows = [machine_row(), ("command", f"python train.py seed=S model.compile=C {' '.join(overrides)}"),
            ("seeds", ", ".join(map(str, seeds)))]
    for setting, runs in results.items():
        walls, fits, ciders = zip(*runs, strict=True)
        spread = f" (sd {statistics.stdev(ciders):.3f})" if len(ciders) > 1 else ""
        rows.append((f"compile={setting}", f"wall {statistics.mean(walls):.0f} s, fit "
                     f"{statistics.mean(fits):.0f} s, test CIDEr-D {statistics.mean(ciders):.3f}{spread}"))
    if len(settings) >= 2 and len(seeds) >= 2:
        first, second = settings[:2]
        differences = [a[2] - b[2] for a, b in zip(results[first], results[second], strict=True)]
        mean, sd = statistics.mean(differences), statistics.stdev(differences)
        half = T_975[min(len(differences) - 1, 9)] * sd / len(differences) ** 0.5
        rows.append((f"CIDEr-D {first} - {second}", f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] "
                                                    f"(95%, t over {len(differences)} seeds)"))
    print_table(rows)


if __name__ == "__main__":
    main()
