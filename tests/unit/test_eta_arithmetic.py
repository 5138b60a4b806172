"""The arithmetic of the places and the ETA, without a database: the pacer's window, the
batch's slots, and the share model's count of the images ahead (generation/eta.py, places.py)."""

from datetime import datetime, timedelta

import pytest

from webapp.generation.eta import (
    MAX_SIMULATED_CREATES,
    Latency,
    Window,
    seconds_left,
    slot_gap,
)
from webapp.generation.places import Ahead, Queue, Waiting

T0 = datetime(2026, 12, 2, 8, 0, 0)


def waiting(batch_id, user_id, minute, pending, in_flight=0):
    return Waiting(batch_id, user_id, T0 + timedelta(minutes=minute), pending, in_flight)


def test_an_empty_window_lets_limit_starts_go_at_once_and_the_next_a_window_later():
    assert Window(2, 10.0).start_times(5) == [0.0, 0.0, 10.0, 10.0, 20.0]


def test_slots_taken_lately_hold_the_next_starts_back_until_they_leave_the_window():
    # Taken 3 s and 1 s ago: the next waits for the older one to leave (10 − 3 = 7 s), the one
    # after for the newer (9 s), the third for the first new one (7 + 10).
    assert Window(2, 10.0, taken=(1.0, 3.0)).start_times(3) == pytest.approx([7.0, 9.0, 17.0])
    # Fewer taken than the limit: one goes now.
    assert Window(2, 10.0, taken=(4.0,)).start_times(2) == pytest.approx([0.0, 6.0])


def test_starts_beyond_the_simulated_ones_follow_the_average_rate():
    times = Window(4, 8.0).start_times(MAX_SIMULATED_CREATES + 2)
    last = times[MAX_SIMULATED_CREATES - 1]
    assert times[-2:] == pytest.approx([last + 2.0, last + 4.0])


def test_the_batch_slots_bound_the_time_when_nothing_paces_it():
    # Two slots, 4 s an image; one image has run 1 s (3 s left): the first waiting one takes
    # the free slot (ends at 4), the second the running one's (3 + 4), the third the first's.
    assert seconds_left(4.0, 2, [1.0], [0, 1, 2]) == pytest.approx(8.0)
    # Nothing waiting: the running images' time left; one past its latency counts as ending now.
    assert seconds_left(4.0, 2, [1.0, 6.0], []) == pytest.approx(3.0)
    assert seconds_left(4.0, 2, [], []) == 0.0


def test_the_pacer_bounds_the_time_when_its_window_is_full():
    # One start per 10 s: the batch's waiting images are the 1st and 3rd to start from now
    # (another user's image goes between them), so the second starts at 20 s and ends at 24.
    assert seconds_left(4.0, 2, [], [0, 2], Window(1, 10.0)) == pytest.approx(24.0)
    # The same images unpaced: both at once.
    assert seconds_left(4.0, 2, [], [0, 2]) == pytest.approx(4.0)


def test_the_last_of_several_images_ends_later_than_one_would():
    spread = Latency((2.0, 4.0, 6.0))
    # One image: its mean. Two at once: the slower of two draws, E[max] = (2 + 4·3 + 6·5) / 9.
    assert spread.last_end([(0.0, None)]) == pytest.approx(4.0)
    assert spread.last_end([(0.0, None), (0.0, None)]) == pytest.approx(44 / 9)
    # In flight for 3 s: it is one of the 4 s or 6 s ones, so 1 or 3 s are left.
    assert spread.left_after(3.0) == pytest.approx(2.0)
    assert spread.last_end([(0.0, 3.0)]) == pytest.approx(2.0)
    # Longer than any sample: it ends now, as far as anyone knows.
    assert spread.last_end([(0.0, 9.0)]) == 0.0
    # The same samples everywhere: no spread, the plain arithmetic.
    assert Latency((5.0,) * 3).last_end([(1.0, None), (2.0, None)]) == pytest.approx(7.0)


def test_the_spread_and_the_gap_between_images_lengthen_the_batch():
    # 4 images, 2 slots, 2 to 6 s each: the last two end at 4 s + the slower of two draws.
    assert seconds_left(Latency((2.0, 4.0, 6.0)), 2, [], [0, 1, 2, 3]) == pytest.approx(
        4.0 + 44 / 9
    )
    # Half a second between an image's end and the next claim in its slot.
    assert seconds_left(4.0, 1, [], [0, 1, 2], gap=0.5) == pytest.approx(13.0)


def test_the_gap_is_what_a_slot_waited_after_an_image_ended():
    at = [T0 + timedelta(seconds=second) for second in range(20)]
    # One slot: each image started 1 s after the previous ended (except a 5 s wait the pacer
    # made, which the lower quartile sets aside).
    starts = [at[0], at[3], at[6], at[13]]
    ends = [at[2], at[5], at[8]]
    assert slot_gap(starts, ends, 1) == pytest.approx(1.0)
    assert slot_gap(starts[:2], [], 1) == 0.0  # no image ended: nothing seen yet
    assert slot_gap(starts[:2], ends, 2) == 0.0  # both started at once


def test_two_users_queued_images_interleave_round_robin_the_older_first():
    queue = Queue({"a": waiting("a", 1, 0, pending=3), "b": waiting("b", 2, 1, pending=2)})

    a = [queue.ahead("a", rank).total for rank in range(3)]
    b = [queue.ahead("b", rank).total for rank in range(2)]

    # The order the share model grants: a0, b0, a1, b1, a2.
    assert a == [0, 2, 4] and b == [1, 3]
    assert queue.ahead("b", 1) == Ahead(batch=1, yours=0, others=2)


def test_a_user_who_had_more_starts_in_the_window_waits_until_the_other_catches_up():
    queue = Queue(
        {"a": waiting("a", 1, 0, pending=3), "b": waiting("b", 2, 1, pending=2)},
        starts={1: 4},
    )

    # User 2 has started nothing lately: both their images go first.
    assert [queue.ahead("b", rank).total for rank in range(2)] == [0, 1]
    assert queue.ahead("a", 0) == Ahead(batch=0, yours=0, others=2)


def test_a_users_batches_interleave_by_images_in_flight_then_age():
    queue = Queue(
        {
            "old": waiting("old", 1, 0, pending=2, in_flight=1),
            "new": waiting("new", 1, 5, pending=2),
            "theirs": waiting("theirs", 2, 2, pending=5),
        }
    )

    # User 1's oldest batch is older: they go first, with "new" (none in flight); then user
    # 2; then user 1's "old" (as many in flight as "new" now, and older): new0, theirs0, old0,
    # theirs1, new1.
    assert queue.ahead("new", 0) == Ahead()
    assert queue.ahead("old", 0) == Ahead(batch=0, yours=1, others=1)
    assert queue.ahead("new", 1) == Ahead(batch=1, yours=1, others=2)


def test_a_held_or_unknown_batch_has_only_its_own_images_ahead():
    queue = Queue({"a": waiting("a", 1, 0, pending=3)})

    assert queue.ahead("paused", 2) == Ahead(batch=2)
    assert queue.ahead("a", 5) == Ahead(batch=5)  # past its allowed images (a canary's rest)


def granted_order(batches, starts):
    """The share model played out image by image (no image ends meanwhile): each grant goes
    to the user with the fewest starts (ties: oldest waiting batch, then lower id), within them
    to the batch with the fewest in flight (ties: oldest), within it the next by position.

    A user's tie is their oldest waiting batch as the queue stands now (places.py counts with
    the ties of the moment; a user whose oldest batch runs out may lose a tie later)."""
    oldest = {}
    for b in batches:
        oldest[b.user_id] = min(oldest.get(b.user_id, b.created_at), b.created_at)
    left = {b.batch_id: b.pending for b in batches}
    flying = {b.batch_id: b.in_flight for b in batches}
    started = dict(starts)
    order = []
    while any(left.values()):
        open_batches = [b for b in batches if left[b.batch_id]]
        users = {b.user_id for b in open_batches}

        user = min(users, key=lambda u: (started.get(u, 0), oldest[u], u))
        batch = min(
            (b for b in open_batches if b.user_id == user),
            key=lambda b: (flying[b.batch_id], b.created_at, b.batch_id),
        )
        rank = batch.pending - left[batch.batch_id]
        order.append((batch.batch_id, rank))
        left[batch.batch_id] -= 1
        flying[batch.batch_id] += 1
        started[user] = started.get(user, 0) + 1
    return order


@pytest.mark.parametrize("seed", range(40))
def test_the_counted_places_are_the_share_models_order(seed):
    import random

    chance = random.Random(seed)
    batches = [
        waiting(f"b{n}", chance.randint(1, 3), chance.randint(0, 30), chance.randint(1, 6),
                chance.randint(0, 3))
        for n in range(chance.randint(1, 6))
    ]
    starts = {user: chance.randint(0, 5) for user in (1, 2, 3) if chance.random() < 0.6}
    queue = Queue({b.batch_id: b for b in batches}, starts=starts)

    order = granted_order(batches, starts)

    for place, (batch_id, rank) in enumerate(order):
        assert queue.ahead(batch_id, rank).total == place, (batch_id, rank, order)
