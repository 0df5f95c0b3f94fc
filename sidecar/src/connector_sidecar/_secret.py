"""A wrapper that keeps secrets out of reprs, logs and tracebacks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["Secret", "is_secret_key", "without_secrets"]


class Secret:
    """Holds a secret string; ``str()``/``repr()`` never show it, ``reveal()`` does."""

    __slots__ = ("_value",)
    _MASK: Final = "**********"

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def is_secret_key(key: str) -> bool:
    """Whether an option or state key names a secret (``appSecret``, ``encryptKey``, ``botToken``…)."""
    lowered = key.lower()
    return any(word in lowered for word in ("secret", "token", "password", "key"))


def without_secrets(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` less the keys :func:`is_secret_key` names secrets."""
    return {k: v for k, v in values.items() if not is_secret_key(k)}
