"""The time-left estimate of a batch page: smoothed from the observed pace, it counts down between
finishes and never leaps up when an image is slower than the ones before (issue 17)."""

from datetime import datetime, timedelta

import pytest

from webapp.generation.progress import RISE_SHARE, Progress, estimate_left

START = datetime(2026, 12, 2, 12, 0, 0)


def at(seconds):
    return START + timedelta(seconds=seconds)


def samples(finishes, images, until, step=0.5):
    """What the page would show at every `step` seconds while the batch runs."""
    shown = []
    time = step
    while time < until:
        done = [at(t) for t in finishes if t <= time]
        if done:
            shown.append((time, estimate_left(START, done, images, at(time))))
        time += step
    return shown


def test_the_estimate_counts_down_between_finishes():
    # Steady 2 s an image: 10 images, 2 done at 4 s → 16 s left, then 1 s less each second.
    finishes = [at(2), at(4)]
    assert estimate_left(START, finishes, 10, at(4)) == pytest.approx(16)
    assert estimate_left(START, finishes, 10, at(5.5)) == pytest.approx(14.5)


@pytest.mark.parametrize(
    "finishes",
    [
        [2, 4, 6, 16, 18, 20, 22],  # one image takes 10 s instead of 2
        [1, 2, 3, 4, 10, 17, 25, 34],  # the engine slows down for good
        [5, 5.1, 5.2, 30, 30.1],  # bursts of a parallel batch
    ],
)
def test_the_estimate_never_jumps_up_when_the_pace_slows(finishes):
    images = len(finishes) + 2
    shown = samples(finishes, images, until=finishes[-1] + 1)
    # The old formula (time so far per image done × images left) rose with every second waited;
    # here a slower pace raises the estimate at a finish by a quarter of the gap at most.
    for (then, before), (time, now) in zip(shown, shown[1:], strict=False):
        done = sum(t <= time for t in finishes)
        if any(then < t <= time for t in finishes):
            last = max(t for t in finishes if t <= time)
            plain = last / done * (images - done) - (time - last)  # the average pace's answer
            assert now - before <= RISE_SHARE * max(plain - before, 0) + 1e-9
        else:
            assert now <= before + 1e-9  # between finishes it only counts down


def test_a_faster_pace_takes_the_estimate_down_at_once():
    slow = estimate_left(START, [at(10)], 5, at(10))
    fast = estimate_left(START, [at(10), at(10.5), at(11)], 5, at(11))
    assert slow == pytest.approx(40)
    assert fast == pytest.approx(11 / 3 * 2)


def test_when_the_count_down_runs_out_it_says_zero_not_a_stale_second():
    assert estimate_left(START, [at(2)], 2, at(10)) == 0


def test_progress_uses_the_finish_times_and_is_none_without_a_pace():
    progress = Progress(total=4, pending=2, processing=0, success=1, failed=1, cancelled=0)
    assert progress.seconds_left(START, at(12), [at(5), at(10)]) == pytest.approx(8)
    assert progress.seconds_left(START, at(20), []) == pytest.approx(20)  # the average pace
    idle = Progress(total=2, pending=2, processing=0, success=0, failed=0, cancelled=0)
    assert idle.seconds_left(START, at(20), []) is None
