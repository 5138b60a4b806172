"""The kie.ai provider (see docs/kie.md).

`provider.py` is the Provider itself (upload, create, poll, download); `client.py` the HTTP
transport; `payloads.py` kie's three API styles and the bodies built from the catalog's mapping;
`codes.py` kie's error codes as our outcomes; `callbacks.py` the callback's task id and signature.
All but the provider and the client are pure.
"""

from .provider import KieProvider, image_format

__all__ = ["KieProvider", "image_format"]
