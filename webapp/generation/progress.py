"""How far a set of generations has got: counts by status, shared by the API and the pages."""

from collections import Counter
from dataclasses import dataclass

from ..models import GenerationStatus


@dataclass(frozen=True)
class Progress:
    total: int
    pending: int
    processing: int
    success: int
    failed: int
    cancelled: int

    @classmethod
    def of(cls, generations):
        return cls.from_counts(Counter(generation.status for generation in generations))

    @classmethod
    def from_counts(cls, counts):
        """From {status: images} (a GROUP BY's rows); missing statuses count 0."""
        return cls(
            total=sum(counts.get(status, 0) for status in GenerationStatus.ALL),
            pending=counts.get(GenerationStatus.PENDING, 0),
            processing=counts.get(GenerationStatus.PROCESSING, 0),
            success=counts.get(GenerationStatus.SUCCESS, 0),
            failed=counts.get(GenerationStatus.FAILED, 0),
            cancelled=counts.get(GenerationStatus.CANCELLED, 0),
        )

    @property
    def finished(self):
        return self.success + self.failed + self.cancelled

    @property
    def is_complete(self):
        return self.finished == self.total

    @property
    def percent(self):
        return round(100 * self.finished / self.total) if self.total else 100

    @property
    def remaining(self):
        return self.pending + self.processing

    def seconds_left(self, started_at, now):
        """The time the images still to do need at the pace of those done so far.

        None until an image has run (there is no pace yet) or when nothing remains. The pace
        already reflects the batch's concurrency and the engine's speed.
        """
        worked = self.success + self.failed
        if not self.remaining or not worked or started_at is None:
            return None
        elapsed = max((now - started_at).total_seconds(), 0.0)
        return elapsed / worked * self.remaining
