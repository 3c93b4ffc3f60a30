"""The media gateway: Infobip's media WebSocket <-> OpenAI Realtime, one call per socket.

Rooms, drawn top to bottom. Every import points down (or sideways into the floor), never
back up: no module imports one above it, and there is no import cycle, not even under
TYPE_CHECKING (tests/gateway/test_gateway_rooms.py checks the order below against the imports).

    cli
     └─ server ............. the process: probes, pending set, session slots, drain
         ├─ fencing ........ after a stall: which calls were re-bridged away (fence them)
         ├─ admission ...... websocket:connected, media token claim, refusals
         └─ session ........ one admitted call: lifecycle, tools, ending decisions
             ├─ ending ..... the ending sequence: notice, orchestrator job, grace close
             ├─ watchdog ... idle and max-duration clocks
             └─ relay ...... the hot path both ways; reaches the session only
                 │           through `RelayHost` (a Protocol, held weakly)
                 ├─ caller_control .. in-call text frames; the DTMF door
                 ├─ bargein ......... clear + truncate at what was heard
                 ├─ turns ........... one response at a time; tool calls per response
                 ├─ caller_output ... push / flush / clear / wait_played_out / rate
                 │    └─ pacer ...... Sender, and the process-wide PacerHub
                 └─ model_link ...... the model socket: configure, buffer, reconnect
    floor (used by the rooms above, imports nothing above it):
      ws_fastpath -> limits -> metrics;  state -> send_gate; tools, wire_watch, sounds,
      config, gc_pauses
    shared/ (wire facts, one definition each; imports nothing from services/):
      realtime_events (24 kHz model audio, event types, benign errors), infobip_media
      (media messages, sample rates), ws_close_codes (RFC 6455), audio/, pcm

Per-frame paths (a caller audio frame, a model audio delta, a pacer tick) bind what they
use once per call (`Relay.audio_handler`, `CallerOutput.__init__`, `PacerHub`), so the
rooms cost no attribute lookups per frame.

Importable from outside this package (other services, tests, tools):
`server.Gateway`, `config.GatewaySettings`, `model_link.ModelLink`,
`tools.default_registry`.
"""
