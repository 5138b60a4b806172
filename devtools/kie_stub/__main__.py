"""Run the stub kie.ai standalone, for trying the app against it by hand and for benchmarks:

    .venv/bin/python -m devtools.kie_stub --port 8099 [--latency 3] [--rate-limit 20/10] …

then start the app with GENERATION_BACKEND=kie KIE_API_BASE=http://127.0.0.1:8099
KIE_UPLOAD_BASE=http://127.0.0.1:8099 KIE_API_KEY=x (any key, unless --api-key names one).
"""

import argparse
import signal
import time

from . import CALLBACK_FORMS, KieStub


def _rate_limit(text):
    """'20/10' → (20, 10.0): creates per seconds."""
    count, _, seconds = text.partition("/")
    return int(count), float(seconds or 10)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m devtools.kie_stub", description=__doc__)
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="the only key accepted (default: any)")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds before a task is done")
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="up to this many seconds more, per task"
    )
    parser.add_argument("--polls-until-done", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-code", default="501", help="400 makes failures content-policy")
    parser.add_argument("--fail-msg", default="Generation failed.")
    parser.add_argument("--rate-429", type=float, default=0.0, help="share of creates refused")
    parser.add_argument("--error-5xx-rate", type=float, default=0.0)
    parser.add_argument("--timeout-rate", type=float, default=0.0)
    parser.add_argument(
        "--lost-answer-rate", type=float, default=0.0, help="creates accepted, answer dropped"
    )
    parser.add_argument("--rate-limit", type=_rate_limit, default=(20, 10.0), help="20/10")
    parser.add_argument("--retry-after", type=float, default=None)
    parser.add_argument("--credits", type=int, default=None, help="account balance (unlimited)")
    parser.add_argument("--callback-form", choices=CALLBACK_FORMS, default="data.taskId")
    parser.add_argument("--webhook-key", default=None, help="sign callbacks with this HMAC key")
    parser.add_argument("--seed", type=int, default=0)
    options = vars(parser.parse_args(argv))
    # Ctrl+C stops it, and so does SIGTERM from a benchmark that started it (a process started
    # in the background may have inherited SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    stub = KieStub(**options)
    print(f"kie.ai stub serving at {stub.base_url} (Ctrl+C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stub.stop()
        print(f"stopped; it saw {dict(stub.counts)}")


if __name__ == "__main__":
    main()
