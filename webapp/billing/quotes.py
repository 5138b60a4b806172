"""The cost line of a batch being put together: what it costs, and whether the balance covers
it. Pure: prices come from the catalog (`Model.price`), the balance from the caller."""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Quote:
    """What the chosen images cost, the balance, and what blocks submitting."""

    count: int | None  # None until the browser says how many images are chosen
    price: int  # ⭐ per image at the chosen model and quality
    balance: int
    problem: str | None

    @property
    def total(self):
        return None if self.count is None else self.count * self.price


def quote(count, price, balance, problem=None):
    """The quote for `count` images at `price` each. A problem found with the request stands
    first; without one, a balance short of the total is the problem."""
    result = Quote(count, price, balance, problem)
    if problem is None and result.total is not None and result.total > balance:
        return replace(result, problem=f"Not enough credits: {result.total - balance}⭐ short")
    return result
