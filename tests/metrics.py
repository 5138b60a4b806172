"""Reading Prometheus' text format back in the tests, with prometheus-client's own parser."""

import shutil
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families


def samples(text):
    """{(sample name, ((label, value), …)): value} of one exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name, **labels):
    return found[(name, tuple(sorted(labels.items())))]


def value_or_zero(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0)


def per_process(folder, prefix="histogram_"):
    """{pid: samples} of each process's own file in a multiprocess folder."""
    found = {}
    for path in Path(folder).glob(f"{prefix}*.db"):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(path, alone)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=alone)
            found[path.stem.rsplit("_", 1)[-1]] = samples(generate_latest(registry).decode())
    return found
