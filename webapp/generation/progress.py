"""How far a set of generations has got: counts by status, shared by the API and the pages."""

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
        counts = dict.fromkeys(GenerationStatus.ALL, 0)
        for generation in generations:
            counts[generation.status] += 1
        return cls(
            total=len(generations),
            pending=counts[GenerationStatus.PENDING],
            processing=counts[GenerationStatus.PROCESSING],
            success=counts[GenerationStatus.SUCCESS],
            failed=counts[GenerationStatus.FAILED],
            cancelled=counts[GenerationStatus.CANCELLED],
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
