"""A test host for end-to-end tests: records every bridge POST and answers with injected faults.

Run as a real process: ``python tests/e2e/recording_host.py --port N --out events.jsonl``.
Each attempt is appended to ``--out`` as one JSON line: the event, its headers and the answer
given (``accepted`` true only for the 200s). Faults are drawn from a seeded RNG:
``--fail-rate`` answers 500, ``--conflict-rate`` answers 409 with ``Retry-After: 1``,
``--slow-rate`` sleeps up to ``--slow-seconds`` first. ``POST /control`` with
``{"down": true}`` makes every POST fail with 503 until ``{"down": false}``. With
``--signing-secret`` each record also says whether the Standard Webhooks signature verified
(``signatureValid``), checked with the reference ``standardwebhooks`` package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def build_app(args: argparse.Namespace) -> Starlette:
    rng = random.Random(args.seed)
    verifier = Webhook(args.signing_secret) if args.signing_secret else None
    out = open(args.out, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the app
    state: dict[str, Any] = {"down": False}

    def record(
        event: dict[str, Any], request: Request, status: int, signature_valid: bool | None
    ) -> None:
        out.write(
            json.dumps(
                {
                    "at": time.time(),
                    "status": status,
                    "accepted": status == 200,
                    "signatureValid": signature_valid,
                    "headers": {
                        k: request.headers.get(k)
                        for k in (
                            "authorization",
                            "webhook-id",
                            "webhook-timestamp",
                            "webhook-signature",
                        )
                    },
                    "event": event,
                }
            )
            + "\n"
        )

    async def events(request: Request) -> Response:
        body = await request.body()
        if args.token and request.headers.get("authorization") != f"Bearer {args.token}":
            return JSONResponse({"accepted": False}, status_code=401)
        event = json.loads(body)
        valid: bool | None = None
        if verifier is not None:
            try:
                verifier.verify(body, dict(request.headers))
            except WebhookVerificationError:
                valid = False
            else:
                valid = True
        if state["down"]:
            record(event, request, 503, valid)
            return JSONResponse({"accepted": False}, status_code=503)
        roll = rng.random()
        if roll < args.slow_rate:
            await asyncio.sleep(rng.uniform(0, args.slow_seconds))
        roll = rng.random()
        if roll < args.fail_rate:
            record(event, request, 500, valid)
            return JSONResponse({"accepted": False}, status_code=500)
        if roll < args.fail_rate + args.conflict_rate:
            record(event, request, 409, valid)
            return JSONResponse(
                {
                    "accepted": False,
                    "duplicate": True,
                    "pending": True,
                    "retryAfterSeconds": args.conflict_retry_after,
                },
                status_code=409,
                headers={"Retry-After": str(args.conflict_retry_after)},
            )
        record(event, request, 200, valid)
        return JSONResponse(
            {"accepted": True, "duplicate": False, "pending": False, "retryAfterSeconds": None}
        )

    async def control(request: Request) -> Response:
        state.update(json.loads(await request.body()))
        return JSONResponse(state)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/events", events, methods=["POST"]),
            Route("/control", control, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--conflict-rate", type=float, default=0.0)
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--slow-seconds", type=float, default=1.0)
    parser.add_argument("--conflict-retry-after", type=int, default=1)
    parser.add_argument("--signing-secret", default="")
    args = parser.parse_args()

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    asyncio.run(serve(build_app(args), config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
