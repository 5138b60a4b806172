"""Tools for developers and ops, outside the service: `python -m devtools.kie_stub` runs a stub
kie.ai on 127.0.0.1 for trying the kie provider offline, for the tests and for bench/."""
