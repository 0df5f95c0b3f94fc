"""A wrapper that keeps tokens and signing keys out of reprs, logs and tracebacks."""

from __future__ import annotations

from typing import Final, final

__all__ = ["Secret", "reveal"]

_MASK: Final = "**********"


@final
class Secret:
    """A secret string. ``repr()`` and ``str()`` never show it; call :meth:`reveal` to use it.

    Equality is by identity on purpose: comparing secrets is the job of
    ``hmac.compare_digest``, never of ``==``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        # Wrapping twice is harmless: keep the inner string.
        self._value: str = value.reveal() if isinstance(value, Secret) else value

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the secret somewhere nobody expects it.
        raise TypeError("Secret values cannot be pickled")


def reveal(value: str | Secret) -> str:
    """Accept a plain string or a :class:`Secret` where configuration is given."""
    return value.reveal() if isinstance(value, Secret) else value
