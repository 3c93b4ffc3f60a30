"""WebSocket close codes the services send or act on, with their RFC 6455 meaning.

Source: RFC 6455 section 7.4.1 (https://www.rfc-editor.org/rfc/rfc6455#section-7.4.1) and
the IANA "WebSocket Close Code Number Registry"
(https://www.iana.org/assignments/websocket/websocket.xhtml#close-code-number), which adds
1012-1014. What Infobip does with each code on the media socket is not published
(docs/protocol-assumptions.md, "Close codes on the media socket"); which codes the model
socket retries after is in docs/protocol-assumptions.md, "OpenAI Realtime" / "Close codes".
"""

from __future__ import annotations

#: The purpose of the connection was fulfilled (a call's normal end).
NORMAL_CLOSURE = 1000
#: An endpoint is going away (server shutdown; the model's 60-minute `session_expired`).
GOING_AWAY = 1001
#: Data of a type the endpoint cannot accept (the gateway: an unsupported sample rate).
UNSUPPORTED_DATA = 1003
#: Reserved: no status code was present in the close frame (never sent).
NO_STATUS_RCVD = 1005
#: Reserved: the connection was lost without a close frame (never sent).
ABNORMAL_CLOSURE = 1006
#: A message violates the endpoint's policy (refused token, protocol violation, flooding).
POLICY_VIOLATION = 1008
#: A message too big to process.
MESSAGE_TOO_BIG = 1009
#: An unexpected condition prevented the request (internal error; unanswered keepalive).
INTERNAL_ERROR = 1011
#: The service is restarting (IANA registry).
SERVICE_RESTART = 1012
#: Try again later: the server is overloaded (IANA registry).
TRY_AGAIN_LATER = 1013
#: Reserved: the TLS handshake failed (never sent).
TLS_HANDSHAKE = 1015

#: A close frame's reason is at most 123 bytes (RFC 6455 section 5.5: control frame payload
#: of 125 bytes, 2 of them the code).
MAX_REASON_BYTES = 123
