"""A load generator of its own process: VIEWERS browsers, each polling one URL every INTERVAL
seconds as the live grid does (htmx's headers, the session cookie, If-None-Match from its last
200), on kept-alive connections, for SECONDS; prints one JSON line of what it saw.

    python -m bench.poll_load URL COOKIE --viewers 1000 --interval 2 --seconds 30

Polls are scheduled on a fixed clock (viewer i at offset i·INTERVAL/VIEWERS, then every
INTERVAL), not after the previous answer, so a slow server meets the same offered rate (an
open loop) and its slowness shows in the latencies. A viewer whose answer came after its next
poll was due sends that one at once (counted `late`) and skips the polls it missed entirely
(counted `skipped`, as a browser's timer does); the run ends after SECONDS whatever is out.
Only 127.0.0.1 is ever asked.
"""

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import aiohttp


async def viewer(session, url, offset, args, stats, started):
    tag = args.tag  # the page's grid holds one (data-etag): its first poll sends it
    due = started + offset
    end = started + args.seconds
    while due < end:
        now = time.monotonic()
        if now < due:
            await asyncio.sleep(due - now)
        elif now - due > 0.001:
            stats["late"] += 1
            missed = int((now - due) // args.interval)
            stats["skipped"] += missed
            due += missed * args.interval
        headers = {"HX-Request": "true", "HX-Target": "batch-grid"}
        if tag:
            headers["If-None-Match"] = tag
        sent = time.monotonic()
        try:
            async with session.get(url, headers=headers) as answer:
                await answer.read()
                status = answer.status
                if status == 200:
                    tag = answer.headers.get("ETag", tag)
        except (TimeoutError, aiohttp.ClientError) as error:
            stats["errors"].append(type(error).__name__)
            status = None
        if status is not None:
            stats["latencies"].setdefault(str(status), []).append(time.monotonic() - sent)
        due += args.interval


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else None


async def main(args):
    if urlsplit(args.url).hostname != "127.0.0.1":
        raise SystemExit("poll_load only loads 127.0.0.1")
    connector = aiohttp.TCPConnector(limit=args.viewers, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    stats = {"latencies": {}, "errors": [], "late": 0, "skipped": 0}
    cookies = {args.cookie.split("=", 1)[0]: args.cookie.split("=", 1)[1]}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookies=cookies
    ) as session:
        started = time.monotonic() + 1.0
        viewers = [
            asyncio.ensure_future(
                viewer(session, args.url, i * args.interval / args.viewers, args, stats, started)
            )
            for i in range(args.viewers)
        ]
        _, pending = await asyncio.wait(viewers, timeout=args.seconds + 1.0 + 10.0)
        for task in pending:  # still waiting for an answer 10 s past the end
            task.cancel()
        stats["unanswered"] = len(pending)
        elapsed = time.monotonic() - started
    every = [value for values in stats["latencies"].values() for value in values]
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "answers": {status: len(values) for status, values in stats["latencies"].items()},
                "p50": percentile(every, 0.50),
                "p95": percentile(every, 0.95),
                "p95_by_status": {
                    status: percentile(values, 0.95)
                    for status, values in stats["latencies"].items()
                },
                "errors": len(stats["errors"]),
                "error_kinds": sorted(set(stats["errors"])),
                "late": stats["late"],
                "skipped": stats["skipped"],
                "unanswered": stats["unanswered"],
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("cookie", help="name=value of the session cookie")
    parser.add_argument("--tag", default=None, help="the ETag each viewer's first poll sends")
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
