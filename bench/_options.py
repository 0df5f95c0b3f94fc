"""What ``python -m bench`` was asked for, handed to each benchmark's ``main``."""

from __future__ import annotations

import dataclasses

__all__ = ["Options"]


@dataclasses.dataclass(frozen=True)
class Options:
    runs: int = 3
    seconds: float = 3.0  # each measured phase
    warmup: float = 0.5
    latency_samples: int = 150
    max_injects: int = 6000  # bounds the outbox the delivery phase drains
    min_backlog: int = 1500  # topped up to this after the inject phase
    database_url: str | None = None
    smoke: bool = False

    @classmethod
    def smoke_test(cls, database_url: str | None = None) -> Options:
        return cls(
            runs=1,
            seconds=0.3,
            warmup=0.05,
            latency_samples=3,
            max_injects=300,
            min_backlog=100,
            database_url=database_url,
            smoke=True,
        )
