// Unit tests of isthmus-wire.mjs. Frames are built byte by byte with DataView (helpers below),
// independently of the module's encodeFrame.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAGIC, VERSION, HEADER_SIZE, FLAGS, TYPES, DEFAULT_STREAMS, VIDEO_CODECS, SAMPLE_FORMATS, AUDIO_CODECS,
  ERROR_CODES, ProtocolError, parseHeader, decodeMsgpack, Decoder, encodeFrame, encodeControl,
} from '../isthmus-wire.mjs';


const enc = new TextEncoder();

/** One frame; every header field can be overridden, including invalid values. */
function frame({
  magic = [0x49, 0x57], version = 1, type = 10, flags = 0, stream = 0, length, total,
  seq = 0n, ts = 0n, payload = new Uint8Array(0),
} = {}) {
  const body = typeof payload === 'string' ? enc.encode(payload) : payload;
  const out = new Uint8Array(32 + body.length);
  const dv = new DataView(out.buffer);
  out[0] = magic[0];
  out[1] = magic[1];
  dv.setUint8(2, version);
  dv.setUint8(3, type);
  dv.setUint16(4, flags, true);
  dv.setUint16(6, stream, true);
  dv.setUint32(8, length ?? body.length, true);
  dv.setUint32(12, total ?? body.length, true);
  dv.setBigUint64(16, BigInt(seq), true);
  dv.setBigUint64(24, BigInt(ts), true);
  out.set(body, 32);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function videoBody({ codec = 1, flagsByte = 1, reserved = 0, width = 1920, height = 1080,
  configLen, pts = 0n, config = Uint8Array.of(0x67, 0x42), data = Uint8Array.of(0, 0, 0, 1, 0x65) } = {}) {
  const out = new Uint8Array(24 + config.length + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint8(0, codec);
  dv.setUint8(1, flagsByte);
  dv.setUint16(2, reserved, true);
  dv.setUint32(4, width, true);
  dv.setUint32(8, height, true);
  dv.setUint32(12, configLen ?? config.length, true);
  dv.setBigInt64(16, BigInt(pts), true);
  out.set(config, 24);
  out.set(data, 24 + config.length);
  return out;
}

function audioBody({ rate = 48000, channels = 2, format = 1, codec = 0, pts = 0n,
  data = Uint8Array.of(1, 0, 2, 0) } = {}) {
  const out = new Uint8Array(16 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, rate, true);
  dv.setUint16(4, channels, true);
  dv.setUint8(6, format);
  dv.setUint8(7, codec);
  dv.setBigInt64(8, BigInt(pts), true);
  out.set(data, 16);
  return out;
}

/** Tensor body; the data starts at `dataOffset` (default: the header end rounded up to 64). */
function tensorBody({ dtype = '<f4', shape = [2, 3], strides = [12, 4], ndim, reserved = 0,
  dtypeLen, dataOffset, data = new Uint8Array(24).map((_, i) => i) } = {}) {
  const dt = enc.encode(dtype);
  const shapeAt = (8 + dt.length + 7) & ~7;
  const headerEnd = shapeAt + 16 * shape.length;
  const off = dataOffset ?? Math.ceil(headerEnd / 64) * 64;
  const out = new Uint8Array(Math.max(off, headerEnd) + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint8(0, ndim ?? shape.length);
  dv.setUint8(1, dtypeLen ?? dt.length);
  dv.setUint16(2, reserved, true);
  dv.setUint32(4, off, true);
  out.set(dt, 8);
  shape.forEach((d, i) => dv.setBigUint64(shapeAt + 8 * i, BigInt(d), true));
  strides.forEach((s, i) => dv.setBigInt64(shapeAt + 8 * shape.length + 8 * i, BigInt(s), true));
  out.set(data, Math.max(off, headerEnd));
  return out;
}

function blobBody({ mime = 'text/plain', name = 'a.txt', mimeLen, nameLen, data = enc.encode('hello') } = {}) {
  const m = typeof mime === 'string' ? enc.encode(mime) : mime;
  const n = typeof name === 'string' ? enc.encode(name) : name;
  const out = new Uint8Array(4 + m.length + n.length + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, mimeLen ?? m.length, true);
  dv.setUint16(2, nameLen ?? n.length, true);
  out.set(m, 4);
  out.set(n, 4 + m.length);
  out.set(data, 4 + m.length + n.length);
  return out;
}

/** A copy of `u8` with a u32 overwritten (for lengths that lie). */
function withU32(u8, at, value) {
  const out = u8.slice();
  new DataView(out.buffer).setUint32(at, value, true);
  return out;
}

const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');

// ---------------------------------------------------------------------------------------------

/** Feed `bytes` whole or one byte at a time; return {messages, error} (error from feed or end). */
function run(bytes, { bytewise = false, ...options } = {}) {
  const d = new Decoder(options);
  const messages = [];
  let error = null;
  try {
    if (bytewise) for (let i = 0; i < bytes.length; i++) messages.push(...d.feed(bytes.subarray(i, i + 1)));
    else messages.push(...d.feed(bytes));
    d.end();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    error = e;
  }
  return { messages, error, decoder: d };
}

/** Assert the error (whole and bytewise) and that `before` messages were decoded first. */
function expectError(bytes, code, offset, { before = 0, ...options } = {}) {
  for (const bytewise of [false, true]) {
    const { messages, error } = run(bytes, { bytewise, ...options });
    assert.ok(error, `expected ${code} at ${offset} (bytewise=${bytewise}), got no error`);
    assert.equal(error.code, code, `${error.message} (bytewise=${bytewise})`);
    assert.equal(error.offset, offset, `${error.message} (bytewise=${bytewise})`);
    assert.equal(messages.length, before, `messages before the error (bytewise=${bytewise})`);
  }
}

const ok = frame({ payload: '{"kind":"move","x":1}' }); // a valid first frame on stream 0, seq 0
const L = ok.length;
const json = (obj) => enc.encode(JSON.stringify(obj));

describe('constants', () => {
  test('header constants and flags', () => {
    assert.equal(MAGIC, 'IW');
    assert.equal(VERSION, 1);
    assert.equal(HEADER_SIZE, 32);
    assert.deepEqual({ ...FLAGS }, { MSGPACK: 1, MORE: 2, CONTINUATION: 4, KEYFRAME: 8 });
  });
  test('type table both ways', () => {
    const table = {
      hello: 1, welcome: 2, goodbye: 3, error: 4, ping: 5, pong: 6, ack: 7, request_keyframe: 8, stats: 9,
      pointer: 10, wheel: 11, key: 12, state_patch: 13, video: 64, audio: 65, tensor: 66, blob: 67,
    };
    assert.deepEqual({ ...TYPES.byName }, table);
    for (const [name, code] of Object.entries(table)) assert.equal(TYPES.byCode[code], name);
    assert.equal(Object.keys(TYPES.byCode).length, 17);
  });
  test('default streams and codec tables', () => {
    assert.deepEqual(DEFAULT_STREAMS.map((s) => [s.id, s.name, s.kind, s.credits]), [
      [0, 'control', 'control', 0], [1, 'state', 'state', 0], [2, 'video', 'video', 4],
      [3, 'audio', 'audio', 0], [4, 'data', 'data', 0],
    ]);
    assert.deepEqual({ ...VIDEO_CODECS }, { 0: 'raw', 1: 'h264', 2: 'hevc', 3: 'av1', 4: 'vp9', 5: 'jpeg' });
    assert.deepEqual({ ...SAMPLE_FORMATS }, { 1: 's16', 2: 's32', 3: 'f32', 4: 'u8', 5: 'f64' });
    assert.deepEqual({ ...AUDIO_CODECS }, { 0: 'pcm', 1: 'opus', 2: 'aac' });
    assert.equal(ERROR_CODES.length, 13);
  });
});

describe('parseHeader', () => {
  test('reads every field at an offset', () => {
    const f = frame({ type: 64, flags: 0b1011, stream: 2, length: 5, total: 70000, seq: 2n ** 63n + 5n,
      ts: 123456789012345n, payload: Uint8Array.of(1, 2, 3, 4, 5) });
    const buf = concat(Uint8Array.of(9, 9, 9), f);
    assert.deepEqual(parseHeader(buf, 3), {
      magic: 'IW', version: 1, type: 64, flags: 11, stream: 2, length: 5, total: 70000,
      seq: 2n ** 63n + 5n, timestampNs: 123456789012345n,
    });
  });
  test('needs 32 bytes', () => {
    assert.throws(() => parseHeader(new Uint8Array(31)), RangeError);
  });
});

describe('decoding', () => {
  test('a JSON control message', () => {
    const { messages, error } = run(frame({ type: 12, seq: 0, ts: 99n, payload: '{"key":"a","down":true}' }));
    assert.equal(error, null);
    assert.deepEqual(messages, [{ type: 'key', typeCode: 12, stream: 0, seq: 0, timestampNs: 99n,
      encoding: 'json', body: { key: 'a', down: true } }]);
  });
  test('a MessagePack control message', () => {
    const body = Uint8Array.of(0x82, 0xa4, ...enc.encode('kind'), 0xa4, ...enc.encode('down'), 0xa1, 0x78, 0xcb,
      0x40, 0x24, 0, 0, 0, 0, 0, 0); // {kind: 'down', x: 10.0}
    const { messages } = run(frame({ type: 10, flags: FLAGS.MSGPACK, payload: body }));
    assert.equal(messages[0].encoding, 'msgpack');
    assert.deepEqual(messages[0].body, { kind: 'down', x: 10 });
  });
  test('state_patch on the state stream, every binary packet on its stream', () => {
    const bytes = concat(
      frame({ type: 13, stream: 1, payload: '{"path":"a","value":1}' }),
      frame({ type: 64, stream: 2, flags: FLAGS.KEYFRAME, ts: 7n, payload: videoBody({ pts: -5n }) }),
      frame({ type: 65, stream: 3, payload: audioBody({ format: 1 + 128, pts: 42n }) }),
      frame({ type: 66, stream: 4, payload: tensorBody() }),
      frame({ type: 67, stream: 4, seq: 1, payload: blobBody() }),
    );
    const { messages, error } = run(bytes);
    assert.equal(error, null);
    assert.deepEqual(messages.map((m) => [m.type, m.stream, m.seq, m.encoding]), [
      ['state_patch', 1, 0, 'json'], ['video', 2, 0, 'binary'], ['audio', 3, 0, 'binary'],
      ['tensor', 4, 0, 'binary'], ['blob', 4, 1, 'binary'],
    ]);
    const [, video, audio, tensor, blob] = messages.map((m) => m.body);
    assert.deepEqual({ ...video, config: hex(video.config), data: hex(video.data) }, {
      codec: 'h264', keyframe: true, width: 1920, height: 1080, pts: -5n, config: '6742', data: '0000000165' });
    assert.deepEqual({ ...audio, data: hex(audio.data) }, {
      rate: 48000, channels: 2, sampleFormat: 's16', planar: true, codec: 'pcm', pts: 42n, data: '01000200' });
    assert.deepEqual({ ...tensor, data: Array.from(tensor.data) }, {
      dtype: '<f4', shape: [2, 3], strides: [12, 4], data: Array.from({ length: 24 }, (_, i) => i) });
    assert.deepEqual({ ...blob, data: hex(blob.data) }, { mime: 'text/plain', name: 'a.txt', data: hex(enc.encode('hello')) });
  });
  test('every video codec, sample format and audio codec', () => {
    for (const [code, name] of Object.entries(VIDEO_CODECS)) {
      const { messages } = run(frame({ type: 64, stream: 2, payload: videoBody({ codec: Number(code), flagsByte: 0 }) }));
      assert.equal(messages[0].body.codec, name);
      assert.equal(messages[0].body.keyframe, false);
    }
    for (const [code, name] of Object.entries(SAMPLE_FORMATS)) {
      const { messages } = run(frame({ type: 65, stream: 3, payload: audioBody({ format: Number(code) }) }));
      assert.deepEqual([messages[0].body.sampleFormat, messages[0].body.planar], [name, false]);
    }
    for (const [code, name] of Object.entries(AUDIO_CODECS)) {
      const { messages } = run(frame({ type: 65, stream: 3, payload: audioBody({ codec: Number(code) }) }));
      assert.equal(messages[0].body.codec, name);
    }
  });
  test('tensor: 0-d, dtype padding, explicit data_offset, every dtype form', () => {
    let { messages } = run(frame({ type: 66, stream: 4, payload: tensorBody({ shape: [], strides: [], dtype: '|u1', data: Uint8Array.of(7) }) }));
    assert.deepEqual({ ...messages[0].body, data: [...messages[0].body.data] }, { dtype: '|u1', shape: [], strides: [], data: [7] });
    ({ messages } = run(frame({ type: 66, stream: 4, payload: tensorBody({ dtype: '<c16', shape: [1], strides: [16], dataOffset: 32, data: new Uint8Array(16) }) })));
    assert.equal(messages[0].body.dtype, '<c16');
    assert.equal(messages[0].body.data.byteOffset, 32 + 32); // frame header + data_offset
    for (const dtype of ['<f4', '>i8', '|u1', '=f16', 'b1', '?', 'c8', 'f2']) {
      const r = run(frame({ type: 66, stream: 4, payload: tensorBody({ dtype, shape: [1], strides: [0] }) }));
      assert.equal(r.error, null, dtype);
      assert.equal(r.messages[0].body.dtype, dtype);
    }
    // an empty array reaches no bytes; a 0 stride reaches one item
    ({ messages } = run(frame({ type: 66, stream: 4, payload: tensorBody({ shape: [0, 5], strides: [20, 4], data: new Uint8Array(0) }) })));
    assert.deepEqual(messages[0].body.shape, [0, 5]);
    ({ messages } = run(frame({ type: 66, stream: 4, payload: tensorBody({ shape: [1000], strides: [0], data: new Uint8Array(4) }) })));
    assert.deepEqual(messages[0].body.shape, [1000]);
  });
  test('seq counters are per stream; seq and timestamp types', () => {
    const bytes = concat(
      frame({ seq: 0, payload: '{}' }), frame({ type: 13, stream: 1, seq: 0, payload: '{}' }),
      frame({ seq: 1, payload: '{}', ts: 2n ** 64n - 1n }), frame({ type: 13, stream: 1, seq: 1, payload: '{}' }),
    );
    const { messages, error } = run(bytes);
    assert.equal(error, null);
    assert.deepEqual(messages.map((m) => [m.stream, m.seq]), [[0, 0], [1, 0], [0, 1], [1, 1]]);
    assert.equal(messages[2].timestampNs, 2n ** 64n - 1n);
  });
  test('empty feeds and end on a frame boundary', () => {
    const d = new Decoder();
    assert.deepEqual(d.feed(new Uint8Array(0)), []);
    assert.equal(d.feed(ok).length, 1);
    assert.deepEqual(d.feed(new ArrayBuffer(0)), []);
    d.end();
    assert.equal(d.offset, L);
    assert.throws(() => d.feed(ok), (e) => !(e instanceof ProtocolError) && /after end/.test(e.message));
  });
});

const mixed = () => concat(
  frame({ type: 5, payload: '{"id":1}' }),
  frame({ type: 64, stream: 2, payload: videoBody() }),
  frame({ type: 10, seq: 1, flags: FLAGS.MSGPACK, payload: Uint8Array.of(0x81, 0xa1, 0x78, 0x01) }),
  // a blob in three chunks
  ...[[0, 10, FLAGS.MORE], [10, 20, FLAGS.MORE | FLAGS.CONTINUATION], [20, 36, FLAGS.CONTINUATION]].map(([a, b, flags]) =>
    frame({ type: 67, stream: 4, flags, total: 36, payload: blobBody({ data: new Uint8Array(17).fill(3) }).subarray(a, b) })),
  frame({ type: 11, seq: 2, payload: '{"dy":-1}' }),
);

describe('partial and coalesced input', () => {
  const normal = (ms) => ms.map((m) => JSON.stringify(m, (k, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? hex(v) : v)));
  test('coalesced frames in one feed', () => {
    const { messages, error } = run(mixed());
    assert.equal(error, null);
    assert.deepEqual(messages.map((m) => m.type), ['ping', 'video', 'pointer', 'blob', 'wheel']);
  });
  test('one byte at a time gives the same messages', () => {
    const whole = run(mixed()).messages;
    const { messages, error } = run(mixed(), { bytewise: true });
    assert.equal(error, null);
    assert.deepEqual(normal(messages), normal(whole));
  });
  test('every split into two feeds gives the same messages', () => {
    const bytes = mixed();
    const whole = normal(run(bytes).messages);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const d = new Decoder();
      const got = [...d.feed(bytes.slice(0, cut)), ...d.feed(bytes.slice(cut))];
      d.end();
      assert.deepEqual(normal(got), whole, `cut at ${cut}`);
    }
  });
  test('a message is returned by the feed that completes it', () => {
    const d = new Decoder();
    const f = frame({ payload: '{"a":1}' });
    assert.deepEqual(d.feed(f.subarray(0, 31)), []);
    assert.deepEqual(d.feed(f.subarray(31, 33)), []);
    assert.equal(d.feed(f.subarray(33)).length, 1);
  });
});

describe('chunk reassembly', () => {
  test('a chunked video interleaved with control messages on another stream', () => {
    const body = videoBody({ config: new Uint8Array(40).fill(1), data: new Uint8Array(100).fill(2) });
    const parts = [body.subarray(0, 50), body.subarray(50, 51), body.subarray(51, 51), body.subarray(51)];
    const flags = [FLAGS.MORE, FLAGS.MORE | FLAGS.CONTINUATION, FLAGS.MORE | FLAGS.CONTINUATION, FLAGS.CONTINUATION];
    const frames = [];
    parts.forEach((p, i) => {
      frames.push(frame({ type: 64, stream: 2, flags: flags[i] | FLAGS.KEYFRAME, total: body.length, ts: 5n, payload: p }));
      frames.push(frame({ type: 5, seq: i, payload: `{"n":${i}}` }));
    });
    for (const bytewise of [false, true]) {
      const { messages, error } = run(concat(...frames), { bytewise });
      assert.equal(error, null);
      assert.deepEqual(messages.map((m) => m.type), ['ping', 'ping', 'ping', 'video', 'ping']);
      const v = messages[3];
      assert.deepEqual([v.stream, v.seq, v.timestampNs], [2, 0, 5n]);
      assert.deepEqual([...v.body.config], new Array(40).fill(1));
      assert.deepEqual([...v.body.data], new Array(100).fill(2));
    }
  });
  test('chunked control message, and seq advances once per message', () => {
    const text = enc.encode('{"path":"layers/0/name","value":"a long name"}');
    const bytes = concat(
      frame({ type: 13, stream: 1, flags: FLAGS.MORE, total: text.length, payload: text.subarray(0, 7) }),
      frame({ type: 13, stream: 1, flags: FLAGS.CONTINUATION, total: text.length, payload: text.subarray(7) }),
      frame({ type: 13, stream: 1, seq: 1, payload: '{}' }),
    );
    const { messages, error } = run(bytes);
    assert.equal(error, null);
    assert.deepEqual(messages.map((m) => [m.seq, m.body]), [[0, { path: 'layers/0/name', value: 'a long name' }], [1, {}]]);
  });
  test('offsets of fields inside a chunked body are absolute', () => {
    const body = videoBody({ configLen: 1000 });
    const bytes = concat(ok,
      frame({ type: 64, stream: 2, flags: FLAGS.MORE, total: body.length, payload: body.subarray(0, 10) }),
      frame({ type: 64, stream: 2, flags: FLAGS.CONTINUATION, total: body.length, payload: body.subarray(10) }));
    // config_len is at body offset 12, i.e. byte 2 of the second chunk's payload
    expectError(bytes, 'truncated', L + 32 + 10 + 32 + 2, { before: 1 });
  });
});

describe('msgpack', () => {
  const d = (...bytes) => decodeMsgpack(Uint8Array.from(bytes));
  const s = (str) => [...enc.encode(str)];
  test('nil, bool, fixints', () => {
    assert.equal(d(0xc0), null);
    assert.equal(d(0xc2), false);
    assert.equal(d(0xc3), true);
    assert.equal(d(0x00), 0);
    assert.equal(d(0x7f), 127);
    assert.equal(d(0xe0), -32);
    assert.equal(d(0xff), -1);
  });
  test('unsigned and signed ints of every width', () => {
    assert.equal(d(0xcc, 0xff), 255);
    assert.equal(d(0xcd, 0x12, 0x34), 0x1234);
    assert.equal(d(0xce, 0xff, 0xff, 0xff, 0xff), 4294967295);
    assert.equal(d(0xcf, 0, 0, 0, 1, 0, 0, 0, 0), 4294967296);
    assert.equal(d(0xcf, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), Number.MAX_SAFE_INTEGER);
    assert.equal(d(0xcf, 0x00, 0x20, 0, 0, 0, 0, 0, 0), 2n ** 53n);
    assert.equal(d(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 2n ** 64n - 1n);
    assert.equal(d(0xd0, 0x80), -128);
    assert.equal(d(0xd1, 0x80, 0x00), -32768);
    assert.equal(d(0xd2, 0x80, 0, 0, 0), -2147483648);
    assert.equal(d(0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe), -2);
    assert.equal(d(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0), -(2n ** 63n));
    assert.equal(d(0xd3, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 2n ** 63n - 1n);
  });
  test('floats', () => {
    assert.equal(d(0xca, 0x3f, 0xc0, 0, 0), 1.5);
    assert.equal(d(0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18), 3.141592653589793);
  });
  test('strings', () => {
    assert.equal(d(0xa0), '');
    assert.equal(d(0xa3, ...s('abc')), 'abc');
    assert.equal(d(0xd9, 2, ...s('é')), 'é');
    assert.equal(d(0xda, 0, 3, ...s('xyz')), 'xyz');
    assert.equal(d(0xdb, 0, 0, 0, 4, ...s('😀')), '😀');
    const long = 'x'.repeat(40);
    assert.equal(d(0xd9, 40, ...s(long)), long);
  });
  test('binary', () => {
    assert.deepEqual([...d(0xc4, 2, 1, 2)], [1, 2]);
    assert.deepEqual([...d(0xc5, 0, 3, 1, 2, 3)], [1, 2, 3]);
    assert.deepEqual([...d(0xc6, 0, 0, 0, 1, 9)], [9]);
    assert.ok(d(0xc4, 0) instanceof Uint8Array);
  });
  test('arrays', () => {
    assert.deepEqual(d(0x90), []);
    assert.deepEqual(d(0x93, 1, 0xc0, 0xa1, 0x61), [1, null, 'a']);
    assert.deepEqual(d(0xdc, 0, 2, 1, 2), [1, 2]);
    assert.deepEqual(d(0xdd, 0, 0, 0, 1, 0x91, 7), [[7]]);
    assert.deepEqual(d(0x9f, ...new Array(15).fill(0)), new Array(15).fill(0));
  });
  test('maps', () => {
    assert.deepEqual(d(0x80), {});
    assert.deepEqual(d(0x82, 0xa1, 0x61, 1, 0xa1, 0x62, 0x81, 0xa1, 0x63, 0xc3), { a: 1, b: { c: true } });
    assert.deepEqual(d(0xde, 0, 1, 0xa1, 0x6b, 0xc2), { k: false });
    assert.deepEqual(d(0xdf, 0, 0, 0, 1, 0xa1, 0x6b, 0x90), { k: [] });
    const proto = d(0x81, 0xa9, ...s('__proto__'), 1);
    assert.equal(Object.getPrototypeOf(proto), Object.prototype);
    assert.deepEqual(Object.keys(proto), ['__proto__']);
  });
  test('accepts an ArrayBuffer', () => {
    assert.equal(decodeMsgpack(Uint8Array.of(0x2a).buffer), 42);
  });
  test('rejects ext types, 0xc1, trailing bytes, truncation, non-string keys, bad UTF-8, deep nesting', () => {
    const bad = [
      [0xc7, 1, 1, 0], [0xc8, 0, 1, 1, 0], [0xc9, 0, 0, 0, 1, 1, 0],
      [0xd4, 1, 0], [0xd5, 1, 0, 0], [0xd6, 1, 0, 0, 0, 0], [0xd7, 1, ...new Array(8).fill(0)], [0xd8, 1, ...new Array(16).fill(0)],
      [0xc1], [0x01, 0x02], [], [0xcd, 1], [0xa3, 0x61], [0x92, 1], [0xdd, 0xff, 0xff, 0xff, 0xff],
      [0x81, 0x01, 0x02], [0xa2, 0xc3, 0x28], [...new Array(300).fill(0x91), 0],
    ];
    for (const bytes of bad) assert.throws(() => d(...bytes), Error, `bytes ${hex(Uint8Array.from(bytes))}`);
  });
});

describe('errors and their offsets', () => {
  test('bad_magic at frame + 0', () => {
    expectError(concat(ok, frame({ magic: [0x49, 0x58] })), 'bad_magic', L, { before: 1 });
    expectError(concat(ok, frame({ magic: [0x47, 0x45] })), 'bad_magic', L, { before: 1 });
    expectError(enc.encode('GET / HTTP/1.1\r\nHost: example.org\r\n\r\n'), 'bad_magic', 0);
    // the header is checked once its 32 bytes are in: shorter garbage is a truncated frame
    expectError(enc.encode('GET / HTTP/1.1\r\n'), 'truncated', 0);
  });
  test('bad_version at frame + 2', () => {
    expectError(concat(ok, frame({ version: 2 })), 'bad_version', L + 2, { before: 1 });
    expectError(concat(ok, frame({ version: 0 })), 'bad_version', L + 2, { before: 1 });
  });
  test('unknown_type at frame + 3', () => {
    for (const type of [0, 14, 63, 68, 255]) expectError(concat(ok, frame({ type })), 'unknown_type', L + 3, { before: 1 });
  });
  test('reserved_flags at frame + 4', () => {
    for (const flags of [0x10, 0x100, 0x8000]) expectError(concat(ok, frame({ flags })), 'reserved_flags', L + 4, { before: 1 });
  });
  test('unknown_stream at frame + 6', () => {
    expectError(concat(ok, frame({ stream: 5 })), 'unknown_stream', L + 6, { before: 1 });
    expectError(concat(ok, frame({ stream: 0xffff })), 'unknown_stream', L + 6, { before: 1 });
  });
  test('frame_too_large at frame + 8', () => {
    expectError(concat(ok, frame({ payload: new Uint8Array(101) })), 'frame_too_large', L + 8, { before: 1, maxFrameSize: 100 });
    // detected from the header alone, before the payload arrives
    expectError(concat(ok, frame({ length: 2 ** 32 - 1 })), 'frame_too_large', L + 8, { before: 1 });
    assert.equal(run(concat(ok, frame({ seq: 1, payload: '{"a":"' + 'x'.repeat(92) + '"}' })), { maxFrameSize: 100 }).error, null);
  });
  test('message_too_large at frame + 12', () => {
    expectError(concat(ok, frame({ flags: FLAGS.MORE, total: 101, payload: '{}' })), 'message_too_large', L + 12,
      { before: 1, maxMessageSize: 100 });
  });
  test('bad_chunk at frame + 4', () => {
    const more = (o = {}) => frame({ type: 13, stream: 1, flags: FLAGS.MORE, total: 10, payload: '{"a":', ...o });
    const cont = (o = {}) => frame({ type: 13, stream: 1, flags: FLAGS.CONTINUATION, total: 10, payload: '1}   ', ...o });
    const M = more().length;
    assert.equal(run(concat(ok, more(), cont())).error, null);
    const cases = {
      'continuation without a start': [concat(ok, cont()), L],
      'new message inside a chunked one': [concat(ok, more(), frame({ type: 13, stream: 1, seq: 1, payload: '{}' })), L + M],
      'second start inside a chunked one': [concat(ok, more(), more({ seq: 1 })), L + M],
      'mismatched type': [concat(ok, more(), cont({ type: 10 })), L + M],
      'mismatched seq': [concat(ok, more(), cont({ seq: 1 })), L + M],
      'mismatched total': [concat(ok, more(), cont({ total: 11, payload: '1}    ' })), L + M],
      'mismatched timestamp': [concat(ok, more(), cont({ ts: 1n })), L + M],
      'lengths short of total': [concat(ok, more(), cont({ payload: '1}' })), L + M],
      'lengths over total': [concat(ok, more(), cont({ flags: FLAGS.MORE | FLAGS.CONTINUATION, payload: '1}     ' })), L + M],
      'first chunk longer than total': [concat(ok, more({ total: 3 })), L],
      'first chunk as long as total': [concat(ok, more({ total: 5 })), L],
      'unchunked length differs from total': [concat(ok, frame({ type: 13, stream: 1, total: 3, payload: '{}' })), L],
    };
    for (const [what, [bytes, offset]] of Object.entries(cases)) {
      for (const bytewise of [false, true]) {
        const { error } = run(bytes, { bytewise });
        assert.deepEqual([error?.code, error?.offset], ['bad_chunk', offset + 4], what);
      }
    }
    // chunks on another stream do not interfere
    assert.equal(run(concat(ok, more(), frame({ seq: 1, payload: '{}' }), cont())).error, null);
  });
  test('sequence at frame + 16', () => {
    expectError(frame({ seq: 1, payload: '{}' }), 'sequence', 16);
    expectError(concat(ok, frame({ seq: 0, payload: '{}' })), 'sequence', L + 16, { before: 1 });
    expectError(concat(ok, frame({ seq: 2, payload: '{}' })), 'sequence', L + 16, { before: 1 });
    expectError(concat(ok, frame({ stream: 1, type: 13, seq: 1, payload: '{}' })), 'sequence', L + 16, { before: 1 });
    // checked before the length/total rule of a first frame
    expectError(concat(ok, frame({ seq: 5, total: 1, payload: '{}' })), 'sequence', L + 16, { before: 1 });
  });
  test('invalid_payload at payload + 0 for control bodies', () => {
    const P = L + 32;
    const bodies = ['{"a":', '[1,2]', 'null', '"x"', '42', '', '\ufeff{}', '{"a":NaN}'];
    for (const b of bodies) expectError(concat(ok, frame({ seq: 1, payload: b })), 'invalid_payload', P, { before: 1 });
    expectError(concat(ok, frame({ seq: 1, payload: Uint8Array.of(0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d) })), 'invalid_payload', P, { before: 1 });
    for (const b of [[0x91, 1], [0xc4, 0], [0xc7, 0, 1], [0x80, 0x80], [0x81, 0xa1], [0x81, 1, 1], []]) {
      expectError(concat(ok, frame({ seq: 1, flags: FLAGS.MSGPACK, payload: Uint8Array.from(b) })), 'invalid_payload', P, { before: 1 });
    }
  });
  test('invalid_payload at payload + 0 for a type on the wrong kind of stream', () => {
    const P = L + 32;
    expectError(concat(ok, frame({ type: 10, stream: 2, payload: '{}' })), 'invalid_payload', P, { before: 1 });
    expectError(concat(ok, frame({ type: 13, stream: 4, payload: '{}' })), 'invalid_payload', P, { before: 1 });
    expectError(concat(ok, frame({ type: 64, stream: 0, seq: 1, payload: videoBody() })), 'invalid_payload', P, { before: 1 });
    expectError(concat(ok, frame({ type: 66, stream: 1, payload: tensorBody() })), 'invalid_payload', P, { before: 1 });
    // known from the header: reported before the payload arrives, and before chunk rules
    expectError(concat(ok, frame({ type: 64, stream: 0, seq: 1, payload: videoBody() }).subarray(0, 32)), 'invalid_payload', P, { before: 1 });
    expectError(concat(ok, frame({ type: 10, stream: 2, flags: FLAGS.CONTINUATION, payload: '{}' })), 'invalid_payload', P, { before: 1 });
  });
  test('invalid_payload at the offending field of a binary body', () => {
    const P = L + 32;
    const cases = [
      [64, 2, videoBody({ codec: 6 }), 0], [64, 2, videoBody({ flagsByte: 2 }), 1], [64, 2, videoBody({ reserved: 1 }), 2],
      [65, 3, audioBody({ format: 0 }), 6], [65, 3, audioBody({ format: 6 }), 6], [65, 3, audioBody({ format: 128 }), 6],
      [65, 3, audioBody({ codec: 3 }), 7],
      [66, 4, tensorBody({ ndim: 33 }), 0], [66, 4, tensorBody({ reserved: 0x100 }), 2],
      [66, 4, tensorBody({ dtype: '<f\u00e9' }), 8], [66, 4, tensorBody({ dtype: 'O' }), 8],
      [66, 4, tensorBody({ dtype: '<f3' }), 8], [66, 4, tensorBody({ dtype: '', shape: [], strides: [] }), 8],
      [66, 4, tensorBody({ strides: [12, -4] }), 8 + 8 + 16 + 8], [66, 4, tensorBody({ strides: [-1, 4] }), 8 + 8 + 16],
      [66, 4, tensorBody({ shape: [2 ** 53, 0], strides: [0, 4] }), 16],
      [66, 4, tensorBody({ shape: [1, 0], strides: [2 ** 53, 4] }), 32],
      [66, 4, tensorBody({ dataOffset: 40 }), 4],
      [67, 4, blobBody({ mime: Uint8Array.of(0x61, 0xc0) }), 4], [67, 4, blobBody({ mime: 'a/b', name: Uint8Array.of(0xff) }), 7],
    ];
    for (const [type, stream, payload, field] of cases) {
      expectError(concat(ok, frame({ type, stream, payload })), 'invalid_payload', P + field, { before: 1 });
    }
  });
  test('invalid_payload for a welcome with a bad stream table', () => {
    const bad = [{ id: -1, name: 'v', kind: 'video' }, { id: 1, name: 'v' }, null, { id: 65536, name: 'v', kind: 'video' },
      { id: 1, kind: 'video' }, { id: 1, name: 'v', kind: 'teapot' }, { id: 1, name: 'v', kind: 'video', credits: -1 },
      { id: 1.5, name: 'v', kind: 'video' }];
    for (const streams of ['x', ...bad.map((s) => [s])]) {
      expectError(concat(ok, frame({ type: 2, seq: 1, payload: JSON.stringify({ streams }) })), 'invalid_payload', L + 32, { before: 1 });
    }
  });
  test('truncated: a length field claiming more than the body', () => {
    const P = L + 32;
    const cases = [
      [64, 2, videoBody({ configLen: 8 }), 12], [64, 2, videoBody({ configLen: 2 ** 32 - 1 }), 12],
      [66, 4, tensorBody({ shape: [], strides: [], dtypeLen: 200, data: new Uint8Array(0) }), 1],
      [66, 4, tensorBody({ shape: [], strides: [], ndim: 3, dataOffset: 16, data: new Uint8Array(0) }), 0],
      [66, 4, withU32(tensorBody(), 4, 64 + 24 + 1), 4],
      [67, 4, blobBody({ mime: 'a', name: '', data: new Uint8Array(0), mimeLen: 2 }), 0],
      [67, 4, blobBody({ mime: 'a', name: 'b', data: new Uint8Array(0), nameLen: 2 }), 2],
      // shape and strides reaching past the data: truncated at the shape
      [66, 4, tensorBody({ data: new Uint8Array(23) }), 16], [66, 4, tensorBody({ shape: [2 ** 53, 3] }), 16],
    ];
    for (const [type, stream, payload, field] of cases) {
      expectError(concat(ok, frame({ type, stream, payload })), 'truncated', P + field, { before: 1 });
    }
  });
  test('truncated: a body shorter than the fixed header, at the payload start', () => {
    const P = L + 32;
    expectError(concat(ok, frame({ type: 64, stream: 2, payload: videoBody().subarray(0, 23) })), 'truncated', P, { before: 1 });
    expectError(concat(ok, frame({ type: 65, stream: 3 })), 'truncated', P, { before: 1 });
    expectError(concat(ok, frame({ type: 66, stream: 4, payload: new Uint8Array(7) })), 'truncated', P, { before: 1 });
    expectError(concat(ok, frame({ type: 67, stream: 4, payload: new Uint8Array(3) })), 'truncated', P, { before: 1 });
  });
  test('truncated at the frame start when the input ends inside a frame', () => {
    const next = frame({ seq: 1, payload: '{"b":2}' });
    for (const cut of [1, 2, 31, 32, 33, next.length - 1]) {
      expectError(concat(ok, next.subarray(0, cut)), 'truncated', L, { before: 1 });
    }
    // a chunked message left unfinished: at the start of its first frame (the earliest one)
    const first = frame({ type: 13, stream: 1, flags: FLAGS.MORE, total: 10, payload: '{' });
    expectError(concat(ok, first), 'truncated', L, { before: 1 });
    expectError(concat(ok, first, frame({ type: 67, stream: 4, flags: FLAGS.MORE, total: 10, payload: '{' }), frame({ seq: 1, payload: '{}' })),
      'truncated', L, { before: 2 });
  });
});

describe('error state', () => {
  test('messages before the bad frame are returned, the error is thrown next, and forever', () => {
    const d = new Decoder();
    const second = frame({ seq: 1, payload: '{"kind":"move","x":2}' }); // as long as `ok`
    assert.equal(second.length, L);
    const bytes = concat(ok, second, frame({ version: 9 }), frame({ seq: 2, payload: '{}' }));
    const got = d.feed(bytes);
    assert.equal(got.length, 2);
    const err = d.error;
    assert.ok(err instanceof ProtocolError);
    assert.deepEqual([err.code, err.offset, err.name], ['bad_version', L + L + 2, 'ProtocolError']);
    assert.throws(() => d.feed(ok), (e) => e === err);
    assert.throws(() => d.feed(new Uint8Array(0)), (e) => e === err);
    assert.throws(() => d.end(), (e) => e === err);
    assert.throws(() => d.feed(ok), (e) => e === err);
  });
  test('feed throws at once when no message came before the bad frame', () => {
    const d = new Decoder();
    assert.equal(d.feed(ok).length, 1);
    assert.throws(() => d.feed(frame({ magic: [0, 0] })), (e) => e.code === 'bad_magic' && e.offset === L);
    assert.throws(() => d.feed(ok), (e) => e === d.error && e.code === 'bad_magic');
  });
  test('the truncated error from end() persists too', () => {
    const d = new Decoder();
    d.feed(ok.subarray(0, 5));
    assert.throws(() => d.end(), (e) => e.code === 'truncated' && e.offset === 0);
    assert.throws(() => d.end(), (e) => e === d.error);
    assert.throws(() => d.feed(ok), (e) => e === d.error);
  });
  test('nothing after the bad frame is parsed', () => {
    const d = new Decoder();
    const bytes = concat(ok, frame({ type: 200 }), frame({ seq: 1, payload: '{}' }));
    assert.equal(d.feed(bytes).length, 1);
    assert.equal(d.error.code, 'unknown_type');
  });
});

describe('zero copy', () => {
  test('video data and config view the fed ArrayBuffer', () => {
    const first = frame({ payload: '{"x":1}' });
    const bytes = concat(first, frame({ type: 64, stream: 2, payload: videoBody() }));
    const ab = bytes.buffer;
    const [, video] = new Decoder().feed(ab);
    assert.equal(video.body.data.buffer, ab);
    assert.equal(video.body.config.buffer, ab);
    assert.equal(video.body.config.byteOffset, first.length + 32 + 24);
    assert.equal(video.body.data.byteOffset, first.length + 32 + 24 + 2);
  });
  test('a Uint8Array view with its own byteOffset', () => {
    const backing = new ArrayBuffer(1000);
    const f = frame({ type: 65, stream: 3, payload: audioBody() });
    const view = new Uint8Array(backing, 100, f.length);
    view.set(f);
    const [audio] = new Decoder().feed(view);
    assert.equal(audio.body.data.buffer, backing);
    assert.equal(audio.body.data.byteOffset, 100 + 32 + 16);
  });
  test('header in one feed and payload in the next: the payload buffer is viewed', () => {
    const f = frame({ type: 67, stream: 4, payload: blobBody() });
    const d = new Decoder();
    assert.deepEqual(d.feed(f.slice(0, 32)), []);
    const rest = f.slice(32);
    const [blob] = d.feed(rest);
    assert.equal(blob.body.data.buffer, rest.buffer);
    assert.equal(blob.body.data.byteOffset, 4 + 10 + 5);
  });
  test('tensor data views the fed buffer', () => {
    const f = frame({ type: 66, stream: 4, payload: tensorBody() });
    const [t] = new Decoder().feed(f.buffer);
    assert.equal(t.body.data.buffer, f.buffer);
    assert.equal(t.body.data.byteOffset, 32 + 64);
  });
});

describe('welcome stream table', () => {
  test('adopted from the welcome body', () => {
    const streams = [
      { id: 0, name: 'control', kind: 'control', credits: 0 },
      { id: 9, name: 'cam2', kind: 'video', credits: 2, extra: 'kept' },
    ];
    const bytes = concat(
      frame({ type: 2, payload: JSON.stringify({ encoding: 'msgpack', streams }) }),
      frame({ type: 64, stream: 9, payload: videoBody() }),
    );
    const { messages, error, decoder } = run(bytes);
    assert.equal(error, null);
    assert.deepEqual(messages.map((m) => [m.type, m.stream]), [['welcome', 0], ['video', 9]]);
    assert.deepEqual(decoder.streams, streams);
    expectError(concat(bytes, frame({ type: 64, stream: 2, payload: videoBody() })), 'unknown_stream', bytes.length + 6, { before: 2 });
  });
  test('a welcome without streams keeps the table; a custom table in the constructor', () => {
    const { decoder } = run(frame({ type: 2, payload: '{"encoding":"json"}' }));
    assert.deepEqual(decoder.streams, DEFAULT_STREAMS);
    const custom = new Decoder({ streams: [{ id: 7, name: 'x', kind: 'data', credits: 0 }] });
    assert.equal(custom.feed(frame({ type: 67, stream: 7, payload: blobBody() }))[0].body.name, 'a.txt');
    assert.throws(() => new Decoder({ streams: [{ id: 'a', kind: 'data' }] }), TypeError);
  });
});

describe('encoding', () => {
  test('encodeFrame matches a hand-built frame', () => {
    const body = Uint8Array.of(1, 2, 3);
    assert.deepEqual(
      encodeFrame({ type: 'blob', stream: 4, seq: 7, timestampNs: 99n, flags: FLAGS.MORE, body, total: 10 }),
      frame({ type: 67, stream: 4, seq: 7n, ts: 99n, flags: 2, total: 10, payload: body }),
    );
    assert.deepEqual(encodeFrame({ type: 5, seq: 0n }), frame({ type: 5 }));
  });
  test('encodeFrame validates', () => {
    assert.throws(() => encodeFrame({ type: 'nope', seq: 0 }), TypeError);
    assert.throws(() => encodeFrame({ type: 99, seq: 0 }), TypeError);
    assert.throws(() => encodeFrame({ type: 'ping' }), TypeError);
    assert.throws(() => encodeFrame({ type: 'ping', seq: 0, flags: 16 }), RangeError);
    assert.throws(() => encodeFrame({ type: 'ping', seq: 0, stream: 70000 }), RangeError);
  });
  test('encodeControl round-trips through the Decoder', () => {
    const d = new Decoder();
    const bytes = concat(
      encodeControl('pointer', { kind: 'down', x: 10.5, y: 20, buttons: 1 }, { seq: 0, timestampNs: 5n }),
      encodeControl('key', { key: 'é', down: true }, { seq: 1 }),
      encodeControl('ack', { stream: 2, seq: 41 }, { seq: 2 }),
      encodeControl('state_patch', { path: 'a', value: [1, 2] }, { seq: 0 }),
    );
    const ms = d.feed(bytes);
    d.end();
    assert.deepEqual(ms.map((m) => [m.type, m.stream, m.seq, m.timestampNs, m.encoding]), [
      ['pointer', 0, 0, 5n, 'json'], ['key', 0, 1, 0n, 'json'], ['ack', 0, 2, 0n, 'json'], ['state_patch', 1, 0, 0n, 'json']]);
    assert.deepEqual(ms.map((m) => m.body), [
      { kind: 'down', x: 10.5, y: 20, buttons: 1 }, { key: 'é', down: true }, { stream: 2, seq: 41 }, { path: 'a', value: [1, 2] }]);
  });
  test('encodeFrame with a binary body round-trips, chunked too', () => {
    const body = videoBody({ data: new Uint8Array(300).fill(9) });
    const frames = [
      encodeFrame({ type: 'video', stream: 2, seq: 0, flags: FLAGS.MORE | FLAGS.KEYFRAME, body: body.subarray(0, 100), total: body.length }),
      encodeFrame({ type: 'video', stream: 2, seq: 0, flags: FLAGS.CONTINUATION | FLAGS.KEYFRAME, body: body.subarray(100), total: body.length }),
    ];
    const [v] = new Decoder().feed(concat(...frames));
    assert.deepEqual([...v.body.data], new Array(300).fill(9));
  });
  test('integers beyond 2**53 are exact BigInts in JSON bodies, both ways', () => {
    const text = '{"nonce":7,"time_ns":1700000000123456789,"neg":-9007199254740993,"edge":9007199254740991,'
      + '"s":"12345678901234567890","f":12345678901234567890.5,"e":1e300,"a":[18446744073709551615]}';
    const [m] = new Decoder().feed(frame({ type: 5, payload: text }));
    assert.deepEqual(m.body, { nonce: 7, time_ns: 1700000000123456789n, neg: -9007199254740993n, edge: 9007199254740991,
      s: '12345678901234567890', f: 12345678901234567890.5, e: 1e300, a: [18446744073709551615n] });
    const echoed = encodeControl('pong', { nonce: 7, time_ns: m.body.time_ns }, { seq: 0 });
    assert.equal(new TextDecoder().decode(echoed.subarray(32)), '{"nonce":7,"time_ns":1700000000123456789}');
  });
  test('encodeControl refuses binary types and non-object bodies', () => {
    assert.throws(() => encodeControl('video', {}, { seq: 0 }), TypeError);
    assert.throws(() => encodeControl('pointer', [1], { seq: 0 }), TypeError);
  });
});
