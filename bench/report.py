"""BENCHMARKS.md and its plot, from the sections a run measured."""

import os
from pathlib import Path

from .harness import PROJECT_ROOT


def plot_makespan(points, path):
    """Makespan against concurrency, measured beside the ideal (and beside the exact bound
    under both limits, where it is higher), as a PNG. Points: (C, measured, ideal, bound)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen on these machines
    from matplotlib import pyplot

    concurrency = [point[0] for point in points]
    figure, axes = pyplot.subplots(figsize=(6.4, 4.0), dpi=120)
    axes.plot(concurrency, [point[1] for point in points], "o-", label="measured makespan")
    axes.plot(concurrency, [point[2] for point in points], "s--",
              label="ideal: max(⌈N/C⌉·L, rate bound)")
    if any(point[3] > point[2] for point in points):
        axes.plot(concurrency, [point[3] for point in points], "^:",
                  label="exact bound under both limits")
    for x, measured, ideal, _ in points:
        axes.annotate(f"×{measured / ideal:.2f}", (x, measured), textcoords="offset points",
                      xytext=(6, 6), fontsize=9)
    axes.set_xlabel("concurrency C (images in flight)")
    axes.set_ylabel("seconds for 50 images")
    axes.set_xticks(concurrency)
    axes.set_ylim(0, 1.15 * max(max(point[1:]) for point in points))
    axes.set_title("Makespan against concurrency, 1 s per image, 20 creates per 10 s")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # No timestamps in the file, so an unchanged plot makes no diff.
    figure.savefig(path, metadata={"Software": None})
    pyplot.close(figure)


def _ratio(result):
    return "n/a" if result.ratio is None else f"{result.ratio:.2f}"


def _verdict(result):
    return {True: "met", False: "**missed**", None: "reported"}[result.met]


def write_report(sections, facts, started_at, total_seconds, plot):
    lines = [
        "# Benchmarks",
        "",
        "`make bench` runs the suite in `bench/` and rewrites this file. Each figure is a ratio "
        "against a reference measured in the same run on the same machine, never an absolute "
        "time: these machines are shared and noisy. Benchmarks never fail the tests on a "
        "timing.",
        "",
        f"This run: {started_at:%Y-%m-%d %H:%M} UTC, {total_seconds:.0f} s in all.",
        "",
        "| Machine | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in facts.items()),
        "",
        "## Results",
        "",
        "| Benchmark | Figure | Ratio | Target | | Measured |",
        "|---|---|---|---|---|---|",
    ]
    for section in sections:
        for result in section.results:
            lines.append(
                f"| {section.title} | {result.figure} | {_ratio(result)} | "
                f"{result.target or '—'} | {_verdict(result)} | {result.detail} |"
            )
    if plot:
        relative = os.path.relpath(plot, PROJECT_ROOT)
        lines += ["", f"![Makespan against concurrency]({relative})"]
    for section in sections:
        lines += ["", f"## {section.title}", "", f"*{section.seconds:.0f} s.* {section.method}"]
        if section.notes:
            lines += ["", *section.notes]
    return "\n".join(lines) + "\n"
