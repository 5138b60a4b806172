"""`make bench`: run every benchmark, print what each measured, and write BENCHMARKS.md with a
plot of makespan against concurrency (docs/bench-makespan.png).

    .venv/bin/python -m bench                  # the whole suite; rewrites BENCHMARKS.md
    .venv/bin/python -m bench status queue     # some of them; prints only

Each figure is a ratio against a reference measured in the same run, never an absolute time:
these machines are shared and noisy. A benchmark never fails on a timing; the exit status is
non-zero only if one could not run at all.
"""

import importlib
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from .harness import PROJECT_ROOT, Section
from .machine import machine
from .report import plot_makespan, write_report

# In the order they run: the quiet ones first, the long ones after.
BENCHMARKS = {
    "submission": "bench.submission",
    "status": "bench.status",
    "grid": "bench.grid",
    "queue": "bench.queue",
    "makespan": "bench.makespan",
    "eta": "bench.eta",
    "events": "bench.events",
    "scaleout": "bench.scaleout",
}


def run_one(name, workdir):
    started = time.perf_counter()
    try:
        section = importlib.import_module(BENCHMARKS[name]).run(Path(workdir) / name)
    except Exception:
        trace = traceback.format_exc()
        section = Section(name, "", notes=["It could not run:", "```", trace, "```"], failed=True)
    section.seconds = time.perf_counter() - started
    return section


def print_section(section):
    print(f"\n== {section.title} ({section.seconds:.0f} s)")
    for result in section.results:
        ratio = "n/a" if result.ratio is None else f"{result.ratio:.2f}"
        target = f" (target {result.target})" if result.target else ""
        print(f"  {result.figure}: {ratio}{target}  {result.detail}")
    for note in section.notes:
        print(f"  {note}")
    sys.stdout.flush()


def main(argv):
    names = argv or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    sections = []
    with tempfile.TemporaryDirectory(prefix="batchgen-bench-") as workdir:
        for name in names:
            print(f"running {name} …", flush=True)
            sections.append(run_one(name, workdir))
            print_section(sections[-1])
    total = time.perf_counter() - started
    print(f"\nall done in {total:.0f} s")
    if not argv:
        plot = PROJECT_ROOT / "docs" / "bench-makespan.png"
        makespan = next((s for s in sections if s.points), None)
        if makespan:
            plot_makespan(makespan.points, plot)
        report = PROJECT_ROOT / "BENCHMARKS.md"
        report.write_text(
            write_report(sections, machine(), started_at, total, plot if makespan else None)
        )
        print(f"wrote {report.relative_to(PROJECT_ROOT)}")
    return 1 if any(section.failed for section in sections) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
