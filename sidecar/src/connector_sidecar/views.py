"""Stored records as the contract's views."""

from __future__ import annotations

import msgspec

from connector_contracts import ConnectionView, ConnectorSessionView, DeliveryView
from connector_sidecar._clock import iso_ms
from connector_sidecar.store import ConnectionRecord, OutboxRow, SessionRecord

__all__ = ["connection_view", "delivery_view", "session_view"]


def session_view(session: SessionRecord) -> ConnectorSessionView:
    return ConnectorSessionView(
        session_id=session.session_id,
        kind=session.kind,
        connection_id=session.connection_id,
        channel_id=session.channel_id,
        status=session.status,
        qr_image=session.qr_image,
        qr_content=session.qr_content,
        account_id=session.account_id,
        display_name=session.vendor_name,
        expires_at=iso_ms(session.expires_at),
        error=session.error,
        metadata=session.metadata,
    )


def connection_view(
    connection: ConnectionRecord, counts: tuple[int, int] = (0, 0)
) -> ConnectionView:
    return ConnectionView(
        connection_id=connection.connection_id,
        channel_id=connection.channel_id,
        kind=connection.kind,
        status=connection.status,
        account_id=connection.account_id,
        display_name=connection.display_name,
        last_error=connection.last_error,
        last_inbound_at=iso_ms(connection.last_inbound_at),
        last_outbound_at=iso_ms(connection.last_outbound_at),
        pending_deliveries=counts[0],
        dead_deliveries=counts[1],
        created_at=iso_ms(connection.created_at),
        updated_at=iso_ms(connection.updated_at),
        replica=connection.lease_owner if connection.is_live else None,
    )


def delivery_view(row: OutboxRow) -> DeliveryView:
    return DeliveryView(
        event_id=row.event_id,
        connection_id=row.connection_id,
        status=row.status,
        attempts=row.attempts,
        created_at=iso_ms(row.created_at) or "",
        next_attempt_at=iso_ms(row.next_attempt_at) if row.status == "pending" else None,
        delivered_at=iso_ms(row.delivered_at),
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        # The stored event says 0; the listing shows the number of the last attempt POSTed,
        # as the host saw it in ``deliveryAttempt`` (0 while none has been made).
        event=msgspec.structs.replace(row.event, delivery_attempt=row.attempts),
    )
