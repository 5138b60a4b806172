"""Providers (image engines) behind one declared interface, `Provider`.

`submit(request)` starts a generation and answers `Done`, `Failed`, `Throttled`, or
`Submitted(task_id)` for providers that work asynchronously; `poll(task_id, request)` then
answers `Pending`, `Done` or `Failed`. A provider never touches the database: the generation
steps record the outcome, and hand it `request.before_create`, which it calls right before
sending a create that a lost answer could leave paid for upstream. A provider with
`paced = True` calls an upstream whose new generations are rate-limited: it is given the pacer
every consumer shares (webapp.pacing) when it is built, takes a slot right before it creates an
upstream task, and answers `Throttled(seconds)` when none came free in time, or when the
upstream refused only for want of time (a 429, an empty account).

`local.py` is the offline Pillow provider of the embedded default; `kie/` is kie.ai. Adding one
is a recipe in docs/architecture.md.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from flask import current_app

from ..catalog import Model
from ..pacing import UNPACED, Pacer, Unpaced, pacer_for

# Retryable failures end their message with this; the steps swap it for what was done instead
# when the attempts run out.
RETRIED = "The image is retried automatically while attempts remain."
# The task id stored for a Submitted(confirmed=False): "unconfirmed:<style>".
UNCONFIRMED_PREFIX = "unconfirmed:"


@dataclass(frozen=True)
class GenerationRequest:
    generation_id: str
    model: Model
    mode: str  # "i2i" | "t2i"
    prompt: str
    negative_prompt: str | None
    quality: str
    aspect_ratio: str
    input_image: bytes | None
    batch_id: str | None = None
    # When the attempt that submitted it began: polls measure the upstream's delays from it.
    started_at: datetime | None = None
    # The attempt's lease token: a callback that names it can claim the task for it.
    attempt: str | None = None
    # Called with a placeholder task id (UNCONFIRMED_PREFIX + style) right before a create
    # whose task a callback can name is sent: it stores the placeholder, fenced on the lease in
    # its own commit, so an attempt whose worker dies before the answer waits for its callback
    # instead of being submitted again. False if the lease was lost: then nothing is sent.
    before_create: Callable[[str], bool] | None = None


@dataclass(frozen=True)
class Submitted:
    """The upstream has (or may have) a task for the generation.

    `confirmed` is False when the create may have reached the upstream but its answer was lost
    (read timeout, connection dropped mid-answer): `task_id` is then a placeholder, and the
    attempt waits for a callback to name the real task, or for the provider's grace to end.
    """

    task_id: str
    confirmed: bool = True


@dataclass(frozen=True)
class Pending:
    pass


@dataclass(frozen=True)
class Done:
    image: bytes
    extension: str = "png"


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    retryable: bool = False


@dataclass(frozen=True)
class Throttled:
    """The upstream has no room for a new generation now: try again after `seconds`. Nothing
    was created upstream, so the attempt does not count.

    `refusal` is set when the upstream itself refused (our own pacer sets none): the retryable
    Failed it stands for, shown on the waiting image and recorded if the wait runs too long.
    """

    seconds: float
    refusal: Failed | None = None


class Provider(Protocol):
    """What the generation steps ask of an image engine."""

    name: str  # stored on every row it works on, and answered as the API's `engine`
    paced: bool  # its upstream limits new generations: it takes the shared pacer's slots
    pacer: Pacer | Unpaced  # UNPACED for a provider that is not paced

    def submit(self, request: GenerationRequest) -> Done | Failed | Submitted | Throttled:
        """Start the generation; an async provider answers Submitted with its task id."""

    def poll(self, task_id: str, request: GenerationRequest) -> Pending | Done | Failed:
        """Ask about a Submitted task (never called on a provider that answers Done at once)."""


def create_provider(config, make_pacer=lambda: UNPACED):
    """The provider named by GENERATION_BACKEND; a paced one is given `make_pacer()`."""
    backend = config["GENERATION_BACKEND"]
    if backend == "local":
        from .local import LocalProvider

        return LocalProvider(
            delay_seconds=config["LOCAL_ENGINE_DELAY"], max_pixels=config["MAX_IMAGE_PIXELS"]
        )
    if backend == "kie":
        from .kie import KieProvider

        if not config.get("KIE_API_KEY"):
            raise ValueError("GENERATION_BACKEND=kie needs KIE_API_KEY (the kie.ai API key)")
        return KieProvider(
            config["KIE_API_KEY"],
            config["KIE_API_BASE"],
            config["KIE_UPLOAD_BASE"],
            timeout=(5, config["KIE_TIMEOUT_SECONDS"]),
            callback_url=kie_callback_url(config),
            rate_limited_wait=config["UPSTREAM_RATE_PERIOD"],
            pacer=make_pacer(),
            pace_hold_seconds=config["UPSTREAM_RATE_PERIOD"],
            callback_secret=config["SECRET_KEY"],
            confirm_grace_seconds=config["KIE_CONFIRM_GRACE_SECONDS"],
        )
    raise ValueError(f"GENERATION_BACKEND={backend!r} is not available (expected 'local' or 'kie')")


def kie_callback_url(config):
    """The callBackUrl kie is given: our callback route under PUBLIC_BASE_URL, if it is set
    (kie must reach it from outside; without it the tasks are only polled)."""
    from .kie.callbacks import CALLBACK_PATH

    base = config.get("PUBLIC_BASE_URL")
    return f"{base}{CALLBACK_PATH}" if base else None


def get_provider() -> Provider:
    return current_app.extensions["batchgen.provider"]


def init_app(app):
    app.extensions["batchgen.provider"] = create_provider(app.config, lambda: pacer_for(app))
