'use strict';
// Interoperability checks of permitd's gRPC server with grpc-js.
//
// Run by tests/cli/test_interop_node.sh.  The Health service is loaded
// at run time from the repository's proto/ with @grpc/proto-loader;
// other calls use the generic client with raw bytes.
//
//   node interop.js calls --api PORT --peer PORT --proto DIR
//       --node-cert PEM --client-cert PEM --client-key PEM
//       [--rogue-cert PEM --rogue-key PEM] (an unpinned client)
//   node interop.js watch --api PORT --proto DIR
//       prints "watch: first status SERVING", then reports NOT_SERVING
//       and UNAVAILABLE when the test stops the node
//
// Prints one line per check ("ok: ..." or "FAIL: ..."); exits 1 when
// any check failed.

const fs = require('fs');
const http2 = require('http2');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const CALL_MS = 15000; // generous for the ASan build
const SERVICE = 'grpc.health.v1.Health';
const CHECK = '/grpc.health.v1.Health/Check';
const WATCH = '/grpc.health.v1.Health/Watch';
const { status: Status } = grpc;
const statusName = (code) =>
  Object.keys(Status).find((k) => Status[k] === code) || String(code);

let failures = 0;
const ok = (what) => console.log(`ok: node: ${what}`);
const bad = (what) => {
  failures++;
  console.log(`FAIL: node: ${what}`);
};

function parseArgs(argv) {
  const args = { mode: argv[0] };
  for (let i = 1; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length)
      throw new Error(`bad argument ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  return args;
}

function loadHealth(protoDir) {
  const def = protoLoader.loadSync('grpc/health/v1/health.proto', {
    includeDirs: [protoDir],
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(def).grpc.health.v1;
}

const deadline = (ms) => Date.now() + ms;
const identity = (b) => b;

// Resolves to {err, value} of a unary call made by start(callback).
function unary(start) {
  return new Promise((resolve) => {
    start((err, value) => resolve({ err, value }));
  });
}

// Reads a server stream to its end: {messages, err} (err null on OK).
function drain(call, onMessage) {
  return new Promise((resolve) => {
    const messages = [];
    call.on('data', (m) => {
      messages.push(m);
      if (onMessage) onMessage(m, messages.length);
    });
    call.on('error', (err) => resolve({ messages, err }));
    call.on('end', () => resolve({ messages, err: null }));
  });
}

function expectStatus(what, err, code, detailCheck) {
  if (!err) {
    bad(`${what}: the call succeeded, expected ${statusName(code)}`);
    return false;
  }
  if (err.code !== code) {
    bad(`${what}: got ${statusName(err.code)} (${JSON.stringify(
      err.details)}), expected ${statusName(code)}`);
    return false;
  }
  const problem = detailCheck ? detailCheck(err.details) : null;
  if (problem) {
    bad(`${what}: ${statusName(code)} but ${problem}`);
    return false;
  }
  ok(`${what}: ${statusName(code)} (${JSON.stringify(err.details)})`);
  return true;
}

// {code: count} of permit_grpc_calls_total for |method| on the local
// listener, read from /metrics over h2c with Node's own http2 client.
function callsTotal(port, method) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const req = session.request({ ':path': '/metrics' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('error', reject);
    req.on('end', () => {
      session.close();
      const prefix =
        `permit_grpc_calls_total{listener="local",method="${method}",code="`;
      const counts = {};
      for (const line of body.split('\n'))
        if (line.startsWith(prefix)) {
          const code = line.slice(prefix.length).split('"')[0];
          counts[code] = Number(line.split(' ').pop());
        }
      resolve(counts);
    });
    req.end();
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// callsTotal() once |expected| calls of |method| have been counted (the
// server counts a call when its stream closes).
async function settledCalls(port, method, expected) {
  const end = Date.now() + CALL_MS;
  for (;;) {
    const counts = await callsTotal(port, method);
    const sum = Object.values(counts).reduce((a, b) => a + b, 0);
    if (sum >= expected || Date.now() > end) return counts;
    await sleep(50);
  }
}

async function checkH2c(health, args) {
  const client = new health.Health(`127.0.0.1:${args.api}`,
    grpc.credentials.createInsecure());
  for (const service of ['', SERVICE]) {
    const { err, value } = await unary((cb) =>
      client.Check({ service }, { deadline: deadline(CALL_MS) }, cb));
    if (err || value.status !== 'SERVING') {
      bad(`Check(${JSON.stringify(service)}) over h2c: ${
        err ? statusName(err.code) + ' ' + err.details : value.status}`);
      client.close();
      return;
    }
  }
  ok("Check over h2c: service '' and grpc.health.v1.Health are SERVING");
  client.close();
}

async function checkTls(health, args) {
  const creds = grpc.credentials.createSsl(
    fs.readFileSync(args['node-cert']),
    fs.readFileSync(args['client-key']),
    fs.readFileSync(args['client-cert']));
  const client = new health.Health(`127.0.0.1:${args.peer}`, creds, {
    'grpc.ssl_target_name_override': args['node-name'] || 'node.example',
  });
  const { err, value } = await unary((cb) =>
    client.Check({ service: SERVICE }, { deadline: deadline(CALL_MS) }, cb));
  client.close();
  if (err) {
    bad(`Check over TLS with a pinned Ed25519 client cert: ${
      statusName(err.code)} (${JSON.stringify(err.details)})`);
  } else if (value.status !== 'SERVING') {
    bad(`Check over TLS: ${value.status}`);
  } else {
    ok('Check over TLS 1.3 with a pinned Ed25519 client cert (and an ' +
       `Ed25519 server cert; OpenSSL ${process.versions.openssl}): SERVING`);
  }
  if (!args['rogue-cert']) return;
  const rogue = new health.Health(`127.0.0.1:${args.peer}`,
    grpc.credentials.createSsl(fs.readFileSync(args['node-cert']),
      fs.readFileSync(args['rogue-key']), fs.readFileSync(args['rogue-cert'])),
    { 'grpc.ssl_target_name_override': args['node-name'] || 'node.example' });
  const r = await unary((cb) =>
    rogue.Check({ service: SERVICE }, { deadline: deadline(CALL_MS) }, cb));
  rogue.close();
  expectStatus('an unpinned client cert fails the handshake', r.err,
    Status.UNAVAILABLE);
}

async function checkErrors(health, args) {
  const addr = `127.0.0.1:${args.api}`;
  const client = new health.Health(addr, grpc.credentials.createInsecure());
  const raw = new grpc.Client(addr, grpc.credentials.createInsecure());
  const opts = () => ({ deadline: deadline(CALL_MS) });
  const rawUnary = (method, bytes) => unary((cb) =>
    raw.makeUnaryRequest(method, identity, identity, bytes, opts(), cb));

  const name = 'caf\u00e9\nx';
  let r = await unary((cb) => client.Check({ service: name }, opts(), cb));
  expectStatus(
    'Check of an unknown service (percent-encoded message decoded back)',
    r.err, Status.NOT_FOUND,
    (d) => (d.includes(`"${name}"`) ? null
      : `the message ${JSON.stringify(d)} does not carry ${
        JSON.stringify(name)}`));

  r = await rawUnary('/grpc.health.v1.Health/NoSuchMethod', Buffer.alloc(0));
  expectStatus('unknown method', r.err, Status.UNIMPLEMENTED);

  const big = 'x'.repeat(1 << 20);
  r = await unary((cb) => client.Check({ service: big }, opts(), cb));
  expectStatus('request over 1 MiB', r.err, Status.RESOURCE_EXHAUSTED);

  // Field 1 declared as a string of 127 bytes, with 1 byte present.
  r = await rawUnary(CHECK, Buffer.from([0x0a, 0x7f, 0x41]));
  expectStatus('malformed request bytes', r.err, Status.INVALID_ARGUMENT);

  // A client deadline: grpc-js sends grpc-timeout and also ends the call
  // itself, so either side may answer first.
  let w = await drain(client.Watch({ service: '' },
    { deadline: deadline(300) }));
  if (expectStatus('Watch with a 300 ms client deadline', w.err,
    Status.DEADLINE_EXCEEDED) &&
      (w.messages.length < 1 || w.messages[0].status !== 'SERVING'))
    bad('Watch before its deadline did not send SERVING first');

  // The server's own answer: grpc-timeout as a header and no client
  // deadline; the server's counter for Watch with DEADLINE_EXCEEDED must
  // rise by one and no other.
  const before = await settledCalls(args.api, WATCH, 1);
  const md = new grpc.Metadata();
  md.set('grpc-timeout', '200m');
  const start = Date.now();
  const call = client.Watch({ service: '' }, md);
  const guard = setTimeout(() => call.cancel(), CALL_MS);
  w = await drain(call);
  clearTimeout(guard);
  const took = (Date.now() - start) / 1000;
  const after = await settledCalls(args.api, WATCH, 2);
  const diff = {};
  for (const k of Object.keys(after))
    if (after[k] !== (before[k] || 0)) diff[k] = after[k] - (before[k] || 0);
  if (expectStatus('Watch with grpc-timeout 200m ended by the server',
    w.err, Status.DEADLINE_EXCEEDED)) {
    const b = before.DEADLINE_EXCEEDED || 0;
    if (JSON.stringify(diff) !== '{"DEADLINE_EXCEEDED":1}')
      bad(`server counters for Watch changed by ${JSON.stringify(diff)}, ` +
          'expected DEADLINE_EXCEEDED +1');
    else if (w.messages.length < 1 || w.messages[0].status !== 'SERVING')
      bad('Watch before the server deadline did not send SERVING first');
    else if (took < 0.15)
      bad(`the server's deadline ended the call after ${took} s`);
    else
      ok('DEADLINE_EXCEEDED came from the server: its Watch ' +
         `DEADLINE_EXCEEDED counter went ${b} -> ${b + 1} and no other, ` +
         `after ${took.toFixed(2)} s`);
  }
  client.close();
  raw.close();
}

async function modeCalls(args) {
  const health = loadHealth(args.proto);
  await checkH2c(health, args);
  await checkErrors(health, args);
  await checkTls(health, args);
}

async function modeWatch(args) {
  const health = loadHealth(args.proto);
  const client = new health.Health(`127.0.0.1:${args.api}`,
    grpc.credentials.createInsecure());
  const call = client.Watch({ service: '' });
  const guard = setTimeout(() => call.cancel(),
    Number(args['watch-seconds'] || 60) * 1000);
  const w = await drain(call, (m, n) => {
    if (n === 1) console.log(`watch: first status ${m.status}`);
  });
  clearTimeout(guard);
  client.close();
  const names = w.messages.map((m) => m.status);
  if (names.join(',') !== 'SERVING,NOT_SERVING')
    bad(`Watch sent ${JSON.stringify(names)}, expected SERVING then (at ` +
        'SIGTERM) NOT_SERVING');
  else
    ok(`Watch streamed ${names.join(' then ')}`);
  if (!w.err || w.err.code !== Status.UNAVAILABLE)
    bad(`Watch ended with ${w.err ? statusName(w.err.code) + ' ' +
      JSON.stringify(w.err.details) : 'OK'} at node shutdown, expected ` +
        'UNAVAILABLE');
  else
    ok(`Watch ended with UNAVAILABLE (${JSON.stringify(w.err.details)}) ` +
       'at node shutdown');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!args.proto) args.proto = path.join(__dirname, '..', '..', 'proto');
  if (args.mode === 'calls') await modeCalls(args);
  else if (args.mode === 'watch') await modeWatch(args);
  else throw new Error(`unknown mode ${args.mode}`);
  return failures ? 1 : 0;
}

main().then((code) => {
  process.exitCode = code;
}, (e) => {
  console.log(`FAIL: node: ${e.stack || e}`);
  process.exitCode = 1;
});
