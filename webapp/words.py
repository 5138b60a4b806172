"""Words for people: a count with its noun in the right number, alike on every page and answer."""


def count_of(count, noun, plural=None):
    """`1 image`, `3 images`; `plural` for a noun that does not just take an s."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
