"""Vendor text made storable: every string UTF-8 can encode, and a note when one was repaired.

Vendors hand over JSON, and JSON may escape a lone UTF-16 surrogate (``"\\ud800"``): Python's
``json`` decodes it into a ``str`` that UTF-8 cannot encode, so neither SQLite nor msgspec can
store it, and a batch holding it would fail as a whole, again and again, on the same cursor.
Whatever a vendor sends must be stored, so the driver boundary (``DriverContext``) passes every
message, session change and vendor state through here before the store sees it:

- each surrogate code point (U+D800 to U+DFFF; valid pairs are already combined by the JSON
  decoder, so any left is lone) becomes U+FFFD, in every string of the value: content, ids,
  names, quotes, metadata keys and values, at any depth;
- an inbound message whose text was repaired says so in its metadata: ``"textRepaired": true``,
  so a host can tell the U+FFFD came from the vendor's data and not from us.

Nothing is dropped: one poisoned message is stored (repaired) beside the good ones of its batch.
The same goes for what a vendor says when it refuses a send: a :class:`~connector_sidecar.drivers.
base.SendError` repairs its message, which the send ledger stores and the host is shown.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:  # the store imports nothing of ours, but drivers.base imports this module
    from connector_sidecar.store import InboundMessage

__all__ = ["DROPPED_FLAG", "REPAIRED_FLAG", "repaired", "storable_message", "storable_text"]

log = logging.getLogger(__name__)

REPAIRED_FLAG = "textRepaired"
DROPPED_FLAG = "metadataDropped"
_encoder = msgspec.json.Encoder()

_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


def storable_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (the same object when it has none)."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(_REPLACEMENT, text)


def repaired(value: Any) -> tuple[Any, bool]:
    """``value`` with every string made storable, and whether anything changed.

    Strings, and the keys and items of dicts, lists and tuples (tuples come back as lists, as
    JSON would have them) are walked; any other value is returned as it is.
    """
    if isinstance(value, str):
        fixed = storable_text(value)
        return fixed, fixed is not value
    if isinstance(value, dict):
        changed = False
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key, key_changed = repaired(key)
            new_item, item_changed = repaired(item)
            out[new_key] = new_item
            changed = changed or key_changed or item_changed
        return (out, True) if changed else (value, False)
    if isinstance(value, list | tuple):
        items = [repaired(item) for item in value]
        if any(changed for _, changed in items):
            return [item for item, _ in items], True
        return value, False
    return value, False


def storable_message(message: InboundMessage) -> InboundMessage:
    """``message`` with all its text storable; flagged ``textRepaired`` in its metadata if needed.

    Metadata the JSON encoder still refuses after that (a driver put a value there JSON has no
    form for: a bug) is replaced by ``{"metadataDropped": <why>}`` and logged as an error: the
    message itself is stored, and the messages after it are not held up.
    """
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(message):
        fixed, changed = repaired(getattr(message, field.name))
        if changed:
            changes[field.name] = fixed
    if changes:
        changes["metadata"] = {**changes.get("metadata", message.metadata), REPAIRED_FLAG: True}
    metadata = changes.get("metadata", message.metadata)
    try:
        _encoder.encode(metadata)
    except (TypeError, ValueError, OverflowError) as exc:
        log.error("message %r: its metadata cannot be stored, dropped: %s", message.message_id, exc)
        changes["metadata"] = {DROPPED_FLAG: str(exc)[:200]}
        if REPAIRED_FLAG in metadata:
            changes["metadata"][REPAIRED_FLAG] = True
    return dataclasses.replace(message, **changes) if changes else message
