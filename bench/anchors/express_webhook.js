// The Express anchor of bench/ingress: a webhook endpoint in the design of Infobip's OpenAI
// tutorial (Express, `express.json()` body parsing, the event logged, 200 answered, nothing
// stored), written for the benchmark and run beside the durable ingress and the no-op aiohttp
// handler under the same load generator and CPU pinning, so "durable req/s / Express req/s"
// is measured in one run on one machine.
//
//   node bench/anchors/express_webhook.js --port 8080 [--path /webhook] [--log line|full]
//
// Logging: `line` (default) writes one line per event (type and callId) with console.log;
// `full` logs the whole parsed event as the tutorial does (util.inspect of the object, which
// costs more per request). run.py sends stdout to /dev/null, where Node writes synchronously
// (https://nodejs.org/api/process.html#a-note-on-process-io), so the cost measured is
// formatting and the write syscall, as in production logging to a file.
// Express: https://expressjs.com/en/5x/api.html#express.json
'use strict';

const express = require('express');

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const port = Number(option('port', ''));
const path = option('path', '/webhook');
const logMode = option('log', 'line');
if (!port || !['line', 'full'].includes(logMode)) {
  console.error('express_webhook: --port N is required; --log is line or full');
  process.exit(2);
}

const app = express();
app.use(express.json({ limit: '64kb' }));
app.post(path, (req, res) => {
  const event = req.body || {};
  if (logMode === 'full') {
    console.log('Infobip event:', event);
  } else {
    console.log(`Infobip event ${event.type} call ${event.callId}`);
  }
  res.status(200).end();
});

const server = app.listen(port, '127.0.0.1', () => console.log(`READY ${port}`));
process.on('SIGTERM', () => { server.close(); process.exit(0); });
