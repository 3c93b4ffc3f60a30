// The Node anchor of bench/gateway: a minimal media relay in the design of Infobip's
// OpenAI tutorial (an Infobip media WebSocket in, one OpenAI Realtime WebSocket out per call,
// built on the `ws` package), written for the benchmark and run under the same legs,
// simulator and CPU pinning as the gateway and the Python floor, so that "gateway CPU per
// call / Node CPU per call" is measured in one run on one machine.
//
//   node bench/anchors/node_relay.js      # configured by the environment, like the gateway:
//   GATEWAY_HOST, GATEWAY_PORT, OPENAI_REALTIME_URL, OPENAI_API_KEY
//
// What it does, and nothing more (no pacing, no silence fill, no barge-in bookkeeping, no
// state, no token check; never deploy it):
// - admission as bench/gateway/floor_relay.py: answer GET /healthz, /readyz and /metrics
//   (empty) so run.py drives it unchanged; accept the WebSocket; the caller's first text
//   message is Infobip's `websocket:connected`; only then open the model socket (GA shape:
//   `?model=`, `Authorization: Bearer`, https://platform.openai.com/docs/guides/realtime-websocket)
//   and ask for a greeting with `response.create` (the simulator's defaults give server VAD
//   and 24 kHz PCM, so no `session.update`, as in the floor);
// - every caller binary frame -> `input_audio_buffer.append` with the PCM in base64
//   (https://platform.openai.com/docs/api-reference/realtime-client-events/input_audio_buffer/append);
//   frames that arrive before the model socket is open are dropped, as in the tutorial (the
//   first tens of ms of a call);
// - every model event is parsed with JSON.parse and routed on `type`:
//   `response.output_audio.delta` is decoded and written to the caller at once, cut in 20 ms
//   binary frames (960 bytes at 24 kHz) - the frame the Infobip media stream carries and the
//   gateway and the floor send, so all three relays make the same number of sends per call;
//   `input_audio_buffer.speech_started` sends the caller `{"action":"clear"}` (text), the
//   message that stops Infobip's playout
//   (https://www.infobip.com/docs/voice-and-video/calls#media-streaming-understanding-calls-api);
//   everything else is ignored;
// - either socket closing closes the other.
// Nothing is logged per message: the tutorial's per-event console.log would make the anchor
// measure logging, not relaying.
'use strict';

const http = require('node:http');
const { WebSocket, WebSocketServer } = require('ws');

const FRAME = 960; // 20 ms of 16-bit mono PCM at 24 kHz
const CLEAR = '{"action":"clear"}'; // byte for byte as shared/infobip_media.py's CLEAR_MESSAGE
const GREETING = '{"type":"response.create"}';
const HEALTH_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

const host = process.env.GATEWAY_HOST || '127.0.0.1';
const port = Number(process.env.GATEWAY_PORT);
const modelUrl = process.env.OPENAI_REALTIME_URL;
const apiKey = process.env.OPENAI_API_KEY;
if (!port || !modelUrl || !apiKey) {
  console.error('node_relay: GATEWAY_PORT, OPENAI_REALTIME_URL and OPENAI_API_KEY are required');
  process.exit(2);
}

function openModel(caller) {
  const model = new WebSocket(`${modelUrl}?model=gpt-realtime`, {
    headers: { Authorization: `Bearer ${apiKey}` },
    perMessageDeflate: false,
    maxPayload: 16 * 1024 * 1024,
  });
  model.on('open', () => model.send(GREETING));
  model.on('message', (data, isBinary) => {
    if (isBinary) return; // the Realtime API sends text frames only
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (event.type === 'response.output_audio.delta') {
      if (caller.readyState !== WebSocket.OPEN) return;
      const pcm = Buffer.from(event.delta, 'base64');
      for (let i = 0; i < pcm.length; i += FRAME) {
        caller.send(pcm.subarray(i, i + FRAME), { binary: true });
      }
    } else if (event.type === 'input_audio_buffer.speech_started') {
      if (caller.readyState === WebSocket.OPEN) caller.send(CLEAR, { binary: false });
    }
  });
  model.on('error', () => {}); // 'close' follows and ends the call
  model.on('close', () => caller.close());
  return model;
}

function onCaller(caller) {
  let model = null;
  caller.on('error', () => {}); // 'close' follows
  caller.on('message', (data, isBinary) => {
    if (!isBinary) {
      // The first text message is `websocket:connected` (the relay trusts it, like the
      // floor); later text messages (DTMF) are ignored.
      if (model === null) model = openModel(caller);
      return;
    }
    if (model !== null && model.readyState === WebSocket.OPEN) {
      model.send(JSON.stringify({ type: 'input_audio_buffer.append',
        audio: data.toString('base64') }));
    }
  });
  caller.on('close', () => {
    if (model !== null) model.close();
  });
}

const server = http.createServer((req, res) => {
  const path = (req.url || '').split('?')[0];
  res.writeHead(HEALTH_PATHS.has(path) ? 200 : 404, { 'Content-Type': 'text/plain' });
  res.end();
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 1024 * 1024 });
wss.on('connection', onCaller);
server.listen(port, host);
process.on('SIGTERM', () => process.exit(0));
