"""Fakes shared by the SDK tests: a clock whose sleep only moves time forward."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeClock:
    """A clock for ``now=``/``clock=`` parameters; ``sleep`` records and advances it."""

    now: float = 1_780_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
