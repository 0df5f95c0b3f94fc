"""QR codes as PNG data URLs (what ``qrImage`` carries), rendered with segno."""

from __future__ import annotations

import segno

__all__ = ["qr_data_url"]


def qr_data_url(content: str) -> str:
    """``data:image/png;base64,…`` of a QR code encoding ``content``."""
    qr = segno.make(content, error="m", micro=False)
    return str(qr.png_data_uri(scale=6, border=2))
