"""The events benchmark's load generator, a process of its own: N viewers of one batch's event
stream (GET /api/generate/batch/<id>/events) on one asyncio loop (aiohttp), 127.0.0.1 only.

    python -m bench.sse_viewers URL TOKEN BATCH_ID --viewers 1000 --seconds 120 --out FILE

Each viewer opens the stream (at most --opening at a time), reads the snapshot it is sent
first, and then every event until `batch`. The process writes `opened` to stdout once every
viewer has its snapshot (or has failed), and when all have ended, or --seconds have passed, a
JSON file: per viewer the wall-clock time (time.time(), this machine's clock, as the
database's) at which each image's terminal event arrived, and the `batch` event's.
"""

import argparse
import asyncio
import json
import re
import resource
import sys
import time
from urllib.parse import urlsplit

import aiohttp

TERMINAL = {"success", "failed", "cancelled"}
# The two fields of a `generation` event it needs, from the route's compact JSON (no spaces):
# the load generator keeps its own CPU small, so what it measures is the server's.
STATUS = re.compile(r'"status":"(\w+)"')
IMAGE = re.compile(r'"generationId":"([^"]+)"')


async def view(session, url, token, opening, opened, record):
    """One viewer: the stream until its `batch` event (or an error, kept in `record`)."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    try:
        async with opening:
            response = await session.get(url, headers=headers)
        async with response:
            if response.status != 200:
                record["error"] = f"HTTP {response.status}"
                return
            first, buffer = True, b""
            async for chunk in response.content.iter_any():
                now = time.time()  # every event of a chunk arrived with it
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    fields = dict(
                        line.split(": ", 1) for line in block.decode().split("\n")
                        if line and not line.startswith(":")
                    )
                    kind = fields.get("event")
                    if kind is None:
                        continue
                    record["events"] += 1
                    if kind == "generation":
                        data = fields["data"]  # compact JSON: two fields found, not parsed
                        if STATUS.search(data).group(1) not in TERMINAL:
                            continue
                        image = IMAGE.search(data).group(1)
                        if first:
                            record["terminal_at_open"].append(image)
                        else:
                            record["terminal"].setdefault(image, now)
                    elif kind == "summary" and first:
                        first = False  # the snapshot ends with its summary
                        opened()
                    elif kind == "batch":
                        record["batch"] = now
                        return
            record["error"] = "the stream ended before its batch event"
    except (TimeoutError, aiohttp.ClientError, OSError) as error:
        record["error"] = f"{type(error).__name__}: {error}"
    finally:
        if record.get("opened_at") is None:
            opened()


async def main(args):
    if urlsplit(args.url).hostname != "127.0.0.1":
        sys.exit("this load generator only talks to 127.0.0.1")
    url = f"{args.url}/api/generate/batch/{args.batch}/events"
    records = [
        {"terminal": {}, "terminal_at_open": [], "batch": None, "error": None, "events": 0,
         "opened_at": None}
        for _ in range(args.viewers)
    ]
    pending = args.viewers
    all_open = asyncio.Event()

    def opener(record):
        def opened():
            nonlocal pending
            if record["opened_at"] is None:
                record["opened_at"] = time.time()
                pending -= 1
                if pending == 0:
                    all_open.set()

        return opened

    connector = aiohttp.TCPConnector(limit=args.viewers, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    opening = asyncio.Semaphore(args.opening)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        viewers = [
            asyncio.create_task(view(session, url, args.token, opening, opener(r), r))
            for r in records
        ]

        async def announce():
            await all_open.wait()
            print("opened", flush=True)

        announcer = asyncio.create_task(announce())
        done, late = await asyncio.wait(viewers, timeout=args.seconds)
        for task in late:
            task.cancel()
        announcer.cancel()
        await asyncio.gather(*late, announcer, return_exceptions=True)
    for record in records:
        if record["batch"] is None and record["error"] is None:
            record["error"] = f"no batch event within {args.seconds:g} s"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(args.out, "w") as out:
        json.dump({"viewers": records, "cpu": usage.ru_utime + usage.ru_stime}, out)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("batch")
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--opening", type=int, default=100, help="connections opened at once")
    parser.add_argument("--seconds", type=float, default=120.0, help="the whole run's bound")
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse(sys.argv[1:])))
