"""OpenAI Realtime API simulator, GA protocol only (https://platform.openai.com/docs/api-reference/realtime).

```python
rt = RealtimeSimulator(api_key="sk-sim", speed=4.0)   # script=[Reply(...), ...]
await rt.start(); rt.url        # ws://127.0.0.1:<port>/v1/realtime
rt.sessions                     # SimSession per connection: what it received and sent
await rt.drop_all(); await rt.expire_all(); rt.refuse_next(2); rt.stall()
await rt.stop()
```
Modules: `server` (socket, handshake, fault hooks), `session` (one session's state machine),
`responses` (a response's event stream), `vad` (energy VAD), `validation` (GA
session.update), `audio` (scripted replies), `records` (SimSession), `wire` (event shapes).
"""

from callbridge.simulators.openai_realtime.audio import ANSWER, DEFAULT_SCRIPT, GREETING, Reply
from callbridge.simulators.openai_realtime.records import ResponseRecord, SimSession
from callbridge.simulators.openai_realtime.server import RealtimeSimulator, serve_forever

__all__ = ["ANSWER", "DEFAULT_SCRIPT", "GREETING", "RealtimeSimulator", "Reply",
           "ResponseRecord", "SimSession", "serve_forever"]
