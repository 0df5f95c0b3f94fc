"""The host SDK of the connector sidecar.

- :class:`SidecarClient`: the sidecar's API, with idempotent, retried ``send()``, media
  (``get_media``/``iter_media``) and the typing indicator (``typing()``).
- :class:`Attachment`: files to send (``from_path``, ``from_bytes``, ``from_url``, ``from_media``).
- :func:`request_id_for`: deterministic requestIds, as existing hosts build them.
- :class:`BridgeVerifier`: bearer token and Standard Webhooks signatures of bridge requests.
- :class:`MemoryDedupeStore`, :class:`SqliteDedupeStore`, :class:`PostgresDedupeStore`,
  :class:`RedisDedupeStore`: process each event once.
- :class:`BridgeEndpoint`, :func:`handle_bridge_request`: the bridge route, ready to mount.
"""

from connector_sdk._retry import RetryPolicy
from connector_sdk._secret import Secret
from connector_sdk._version import __version__
from connector_sdk.client import DEFAULT_SIDECAR_URL, SidecarClient
from connector_sdk.dedupe import (
    DedupeDecision,
    DedupeRecord,
    DedupeStatus,
    DedupeStore,
    MemoryDedupeStore,
    PostgresDedupeStore,
    RedisDedupeStore,
    SqliteDedupeStore,
    dedupe_key,
)
from connector_sdk.endpoint import (
    BridgeEndpoint,
    BridgeHandler,
    BridgeResponse,
    ConnectionStatusHandler,
    SendStatusHandler,
    handle_bridge_request,
)
from connector_sdk.errors import (
    BridgeRequestError,
    BridgeTimestampOutOfTolerance,
    BridgeUnauthorized,
    ConfigurationError,
    Conflict,
    ConnectionNotFound,
    ConnectionNotReady,
    ConnectorNotFound,
    ConnectorSDKError,
    DedupeError,
    DedupeImportError,
    DeliveryNotFound,
    Gone,
    InvalidBridgeEvent,
    InvalidBridgeSignature,
    InvalidBridgeToken,
    InvalidResponse,
    MediaNotFound,
    NotFound,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    RequestIdConflict,
    RequestInProgress,
    RequestNotFound,
    SendExpired,
    ServerError,
    SessionNotAwaitingCode,
    SessionNotFound,
    SidecarError,
    SidecarHTTPError,
    SidecarUnavailable,
    Unauthorized,
    UnknownDedupeKey,
    ValidationFailed,
)
from connector_sdk.ids import request_id_for
from connector_sdk.media import Attachment
from connector_sdk.verify import BridgeVerifier, UnknownEvent, WebhookSecret, sign_webhook

__all__ = [
    "DEFAULT_SIDECAR_URL",
    "Attachment",
    "BridgeEndpoint",
    "BridgeHandler",
    "BridgeRequestError",
    "BridgeResponse",
    "BridgeTimestampOutOfTolerance",
    "BridgeUnauthorized",
    "BridgeVerifier",
    "ConfigurationError",
    "Conflict",
    "ConnectionNotFound",
    "ConnectionNotReady",
    "ConnectionStatusHandler",
    "ConnectorNotFound",
    "ConnectorSDKError",
    "DedupeDecision",
    "DedupeError",
    "DedupeImportError",
    "DedupeRecord",
    "DedupeStatus",
    "DedupeStore",
    "DeliveryNotFound",
    "Gone",
    "InvalidBridgeEvent",
    "InvalidBridgeSignature",
    "InvalidBridgeToken",
    "InvalidResponse",
    "MediaNotFound",
    "MemoryDedupeStore",
    "NotFound",
    "PostgresDedupeStore",
    "ProviderRejected",
    "ProviderUnavailable",
    "RateLimited",
    "RedisDedupeStore",
    "RequestIdConflict",
    "RequestInProgress",
    "RequestNotFound",
    "RetryPolicy",
    "Secret",
    "SendExpired",
    "SendStatusHandler",
    "ServerError",
    "SessionNotAwaitingCode",
    "SessionNotFound",
    "SidecarClient",
    "SidecarError",
    "SidecarHTTPError",
    "SidecarUnavailable",
    "SqliteDedupeStore",
    "Unauthorized",
    "UnknownDedupeKey",
    "UnknownEvent",
    "ValidationFailed",
    "WebhookSecret",
    "__version__",
    "dedupe_key",
    "handle_bridge_request",
    "request_id_for",
    "sign_webhook",
]
