"""The built-in offline engine: real image edits with Pillow, driven by the prompt.

It is the sandbox engine of the embedded default. It fits the input to the aspect ratio,
scales it to the quality's long side, and applies the edits the prompt names: a solid
background, grayscale, sepia, invert, blur, sharpen, mirror, flip, rotate.
"""

import time

from ..pacing import UNPACED
from . import Done, Failed
from .imaging import TooManyPixels, render


class LocalProvider:
    name = "local"
    paced = False  # in-process: no upstream to pace
    pacer = UNPACED

    def __init__(self, delay_seconds=0.0, max_pixels=None):
        self.delay_seconds = delay_seconds
        self.max_pixels = max_pixels  # MAX_IMAGE_PIXELS, checked again on the stored input

    def submit(self, request):
        """Render the image at once (the local engine has no remote task to wait for)."""
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        try:
            image = render(
                request.input_image,
                request.prompt,
                request.quality,
                request.aspect_ratio,
                self.max_pixels,
            )
        except TooManyPixels as error:
            return Failed("invalid_input", f"The input image is too large to edit: {error}.")
        except OSError as error:
            return Failed("invalid_input", f"The input image could not be read: {error}")
        return Done(image, "png")

    def poll(self, task_id, request):
        return Failed("unknown_task", "The local engine has no remote tasks.")
