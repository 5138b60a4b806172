"""`huey_consumer bench.queue_app.huey`: the app's own consumer (app.huey, every task and the
reaper) with an image engine of zero latency and no work, for bench/queue.py.

The local engine at LOCAL_ENGINE_DELAY=0 is not that: it scales every result to the quality's
long side (1024 px at least) and encodes a PNG, some 30 ms of CPU per image, which would make
the benchmark measure Pillow instead of the queue.
"""

from app import app, huey
from webapp.providers import Done
from webapp.providers.local import LocalProvider

__all__ = ["app", "huey"]


class InstantEngine(LocalProvider):
    """The local engine with the image work taken out: every image comes back at once, as its
    own input (the benchmark's inputs are PNGs)."""

    def submit(self, request):
        return Done(request.input_image, "png")


app.extensions["batchgen.provider"] = InstantEngine()
