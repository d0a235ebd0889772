// Browser side of tests/test_wire_browser.py: a WebSocket client speaking isthmus-wire with
// libs/wire/js/isthmus-wire.mjs (served as /isthmus-wire.mjs).
//
// Query: ?ws=<WebSocket URL>&encodings=<comma-separated list for the hello>.
// It says hello, feeds every message to a Decoder, acks video packets, answers pings and the
// server's goodbye, and sends a pointer event once it has seen a state patch, a video packet,
// a tensor and a ping. On a ProtocolError it closes the socket with code 4002 and the reason
// "<code> at <offset>" (the JS README's example uses 1002, but a browser's WebSocket.close()
// only takes 1000 or 3000-4999 and throws InvalidAccessError on 1002). When the socket closes
// it stores a JSON-able summary in window.__result (BigInts as decimal strings);
// window.__partial() returns the summary so far.
import { Decoder, ProtocolError, encodeControl } from '/isthmus-wire.mjs';

const params = new URLSearchParams(window.location.search);
const jsonable = (value) => JSON.parse(JSON.stringify(value, (k, v) => (typeof v === 'bigint' ? v.toString() : v)));
const describe = (err) => ({
  name: err?.name ?? null,
  isProtocolError: err instanceof ProtocolError,
  code: err?.code ?? null,
  offset: err?.offset ?? null,
  message: String(err?.message ?? err),
});

const result = {
  welcome: null,
  received: [], // every decoded message: {type, stream, seq, encoding}
  statePatches: [],
  video: null,
  tensor: null,
  ping: null,
  goodbye: null,
  sent: [], // every frame sent: {type, stream, seq}
  bytesSent: 0,
  bytesReceived: 0, // decoder.offset when the socket closed
  wsMessages: 0,
  nonBinaryMessages: 0,
  error: null, // the ProtocolError, with how it surfaced
  endError: null, // what decoder.end() threw at close, if anything
  close: null,
  failure: null, // an unexpected exception in this script
};
window.__partial = () => jsonable(result);

let videoData = null;
let pointerSent = false;
const seq = new Map(); // next seq per stream, for what we send
const ws = new WebSocket(params.get('ws'));
ws.binaryType = 'arraybuffer';
const decoder = new Decoder();

// Close codes a script may use are 1000 and 3000-4999: 4000 + the protocol's code.
const PROTOCOL_ERROR = 4002;
const CLIENT_FAILURE = 4011;

const fail = (err) => {
  result.failure ??= String(err?.stack ?? err);
  if (ws.readyState === WebSocket.OPEN) ws.close(CLIENT_FAILURE, 'client failure');
};
window.addEventListener('error', (event) => fail(event.error ?? event.message));
window.addEventListener('unhandledrejection', (event) => fail(event.reason));

function send(type, body, stream = type === 'state_patch' ? 1 : 0) {
  const n = seq.get(stream) ?? 0;
  seq.set(stream, n + 1);
  const frame = encodeControl(type, body, { stream, seq: n });
  ws.send(frame);
  result.sent.push({ type, stream, seq: n });
  result.bytesSent += frame.length;
}

function handle(m) {
  const b = m.body;
  result.received.push({ type: m.type, stream: m.stream, seq: m.seq, encoding: m.encoding });
  switch (m.type) {
    case 'welcome':
      result.welcome = {
        encoding: b.encoding, session: b.session, name: b.name, codecs: b.codecs,
        max_frame_size: b.max_frame_size, credits: b.credits,
        streams: decoder.streams.map((s) => ({ id: s.id, name: s.name, kind: s.kind, credits: s.credits, chunk_size: s.chunk_size })),
      };
      break;
    case 'state_patch':
      result.statePatches.push({ path: b.path, value: b.value });
      break;
    case 'video':
      videoData = b.data;
      result.video = {
        stream: m.stream, seq: m.seq, codec: b.codec, keyframe: b.keyframe, width: b.width, height: b.height,
        pts: b.pts, config: Array.from(b.config), dataLength: b.data.length, dataHead: Array.from(b.data.subarray(0, 8)),
      };
      send('ack', { stream: m.stream, seq: m.seq }); // return the video credit
      break;
    case 'tensor': {
      if (b.dtype !== '<f4') throw new Error(`unexpected tensor dtype ${b.dtype}`);
      // data may sit at any byte offset of the received buffer: read through a DataView.
      const dv = new DataView(b.data.buffer, b.data.byteOffset, b.data.byteLength);
      const values = [];
      for (let i = 0; i + 4 <= dv.byteLength; i += 4) values.push(dv.getFloat32(i, true));
      result.tensor = { dtype: b.dtype, shape: b.shape, strides: b.strides, values };
      break;
    }
    case 'ping':
      result.ping = { nonce: b.nonce, time_ns: b.time_ns, nonceType: typeof b.nonce, timeType: typeof b.time_ns };
      send('pong', { nonce: b.nonce, time_ns: b.time_ns }); // BigInts are written back exactly
      break;
    case 'goodbye':
      result.goodbye = { code: b.code, reason: b.reason };
      send('goodbye', { code: 1000, reason: 'bye from chromium' });
      break;
    default:
      break;
  }
  if (!pointerSent && !result.goodbye && result.statePatches.length && result.video && result.tensor && result.ping) {
    pointerSent = true;
    send('pointer', { kind: 'down', x: 12.5, y: 7.25, button: 0, buttons: 1, modifiers: 2, pointer_id: 3 });
  }
}

ws.onopen = () => {
  try {
    send('hello', {
      protocol: 1, role: 'client', name: 'chromium', encodings: params.get('encodings').split(','),
      codecs: ['h264'], max_frame_size: 1 << 20, credits: 4, token: 'browser-token',
    });
  } catch (err) {
    fail(err);
  }
};

ws.onmessage = (event) => {
  try {
    result.wsMessages += 1;
    if (!(event.data instanceof ArrayBuffer)) {
      result.nonBinaryMessages += 1;
      return;
    }
    const messageOffset = decoder.offset; // where this message starts in the byte stream
    let messages = [];
    let thrown = false;
    try {
      messages = decoder.feed(event.data);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      thrown = true;
    }
    for (const m of messages) handle(m);
    const err = decoder.error;
    if (err && !result.error) {
      result.error = {
        ...describe(err), thrown, decodedInSameFeed: messages.map((m) => m.type), messageOffset,
      };
      ws.close(PROTOCOL_ERROR, `${err.code} at ${err.offset}`);
    }
  } catch (err) {
    fail(err);
  }
};

ws.onclose = async (event) => {
  try {
    result.close = { code: event.code, reason: event.reason, wasClean: event.wasClean };
    result.bytesReceived = decoder.offset;
    try {
      decoder.end();
    } catch (err) {
      result.endError = { ...describe(err), sameAsError: err === decoder.error };
    }
    if (videoData) {
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', videoData));
      result.video.sha256 = Array.from(digest, (x) => x.toString(16).padStart(2, '0')).join('');
    }
  } catch (err) {
    result.failure ??= String(err?.stack ?? err);
  }
  window.__result = jsonable(result);
};
