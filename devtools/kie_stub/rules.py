"""What the stub kie.ai accepts in a create body, per docs/kie.md.

The real kie refuses a body that lacks a required field or carries a value the model does not
take (code 422), so the stub does too: an end-to-end run then proves every field is sent.
"""

FLUX_2_RATIOS = {"1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "auto"}
BANANA_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "auto"}
KONTEXT_MODELS = {"flux-kontext-pro", "flux-kontext-max"}
KONTEXT_RATIOS = {"21:9", "16:9", "4:3", "1:1", "3:4", "9:16"}
GPT4O_SIZES = {"1:1", "3:2", "2:3"}

# Jobs-API models: input field → the values it takes (None: any), and whether it is required.
# An image field is a list of URLs (or one URL for "url"), with the most it takes.
JOBS_MODELS = {
    "flux-2/pro-image-to-image": {
        "input_urls": ("urls", 8, True),
        "aspect_ratio": (FLUX_2_RATIOS, None, True),
        "resolution": ({"1K", "2K"}, None, True),
    },
    "flux-2/pro-text-to-image": {
        "aspect_ratio": (FLUX_2_RATIOS - {"auto"}, None, True),
        "resolution": ({"1K", "2K"}, None, True),
    },
    "google/nano-banana-edit": {
        "image_urls": ("urls", 10, True),
        "aspect_ratio": (BANANA_RATIOS, None, False),
        "output_format": ({"png", "jpeg"}, None, False),
    },
    "google/nano-banana": {
        "aspect_ratio": (BANANA_RATIOS, None, False),
        "output_format": ({"png", "jpeg"}, None, False),
    },
    "nano-banana-pro": {
        "image_input": ("urls", 8, False),
        "aspect_ratio": (BANANA_RATIOS, None, False),
        "resolution": ({"1K", "2K", "4K"}, None, False),
        "output_format": ({"png", "jpg"}, None, False),
    },
    "seedream/4.5-edit": {
        "image_urls": ("urls", 10, True),
        "aspect_ratio": (None, None, True),
        "quality": ({"basic", "high"}, None, True),
    },
    "qwen/image-edit": {
        "image_url": ("url", 1, True),
        "image_size": (None, None, False),
        "negative_prompt": ("text", 500, False),
        "output_format": (None, None, False),
    },
    "gpt-image/1.5-image-to-image": {
        "input_urls": ("urls", 16, True),
        "aspect_ratio": ({"1:1", "2:3", "3:2"}, None, True),
        "quality": ({"medium", "high"}, None, True),
    },
}


def problem_with(style, body):
    """Why kie would refuse this create body (a message), or None if it would accept it."""
    if style == "jobs":
        return _jobs_problem(body)
    if style == "kontext":
        return _kontext_problem(body)
    return _gpt4o_problem(body)


def _jobs_problem(body):
    fields = body.get("input")
    model = body.get("model")
    if model not in JOBS_MODELS:
        return f"model {model!r} is not supported"
    if not isinstance(fields, dict) or not _text(fields.get("prompt")):
        return "input.prompt is required"
    for name, rule in JOBS_MODELS[model].items():
        problem = _field_problem(f"input.{name}", fields.get(name), *rule)
        if problem:
            return problem
    return None


def _kontext_problem(body):
    if not _text(body.get("prompt")):
        return "prompt is required"
    if body.get("model", "flux-kontext-pro") not in KONTEXT_MODELS:
        return f"model {body.get('model')!r} is not supported"
    return (
        _field_problem("inputImage", body.get("inputImage"), "url", 1, False)
        or _field_problem("aspectRatio", body.get("aspectRatio"), KONTEXT_RATIOS, None, False)
        or _field_problem("outputFormat", body.get("outputFormat"), {"jpeg", "png"}, None, False)
    )


def _gpt4o_problem(body):
    if not _text(body.get("prompt")) and not body.get("filesUrl"):
        return "prompt or filesUrl is required"
    return (
        _field_problem("size", body.get("size"), GPT4O_SIZES, None, True)
        or _field_problem("filesUrl", body.get("filesUrl"), "urls", 5, False)
        or _field_problem("nVariants", body.get("nVariants"), {1, 2, 4}, None, False)
    )


def _field_problem(name, value, allowed, most, required):
    if value is None:
        return f"{name} is required" if required else None
    if allowed == "urls":
        if not isinstance(value, list) or not value or not all(map(_text, value)):
            return f"{name} must be a list of URLs"
        return f"{name} takes at most {most}" if len(value) > most else None
    if allowed == "url":
        return None if _text(value) else f"{name} must be one URL"
    if allowed == "text":
        return f"{name} is longer than {most}" if len(str(value)) > most else None
    if allowed is not None and value not in allowed:
        return f"{name} {value!r} is not supported"
    return None


def _text(value):
    return isinstance(value, str) and bool(value.strip())
