"""The machine a benchmark runs on: its facts for the report, and where its CPU time goes."""

import contextlib
import os
import platform
import shutil
from pathlib import Path


def machine():
    """The machine's facts for the report."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    versions = []
    for module in ("flask", "sqlalchemy", "huey", "gunicorn"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{module} {version(module)}")
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": ", ".join(versions),
        "wrk": shutil.which("wrk") or "not installed",
    }


def _stat(pid):
    """(parent pid, CPU seconds) of a live process, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks


def cpu_seconds(pid):
    """CPU seconds (user + system) spent so far by a live process and its live descendants."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(entry.name)] = _stat(entry.name)
    children = {}
    for candidate, (parent, _) in parents.items():
        children.setdefault(parent, []).append(candidate)
    total, family = 0.0, [pid]
    while family:
        member = family.pop()
        total += parents.get(member, (0, 0.0))[1]
        family.extend(children.get(member, ()))
    return total


def machine_busy_seconds():
    """CPU seconds every core of the machine has spent busy since boot (from /proc/stat)."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")
