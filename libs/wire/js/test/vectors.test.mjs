// Golden vectors shared with the Python decoder: libs/wire/tests/vectors/<name>.bin + <name>.json.
// Set ISTHMUS_WIRE_VECTORS to a folder to run another set. The suite fails when no vector lists
// "js" in its "decoders", so that it cannot pass vacuously.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { Decoder, ProtocolError } from '../isthmus-wire.mjs';

const dirUrl = process.env.ISTHMUS_WIRE_VECTORS
  ? pathToFileURL(resolve(process.env.ISTHMUS_WIRE_VECTORS) + '/')
  : new URL('../../tests/vectors/', import.meta.url);
const dir = fileURLToPath(dirUrl);

let files = [];
try {
  files = readdirSync(dirUrl).filter((f) => f.endsWith('.json')).sort();
} catch (e) {
  if (e.code !== 'ENOENT') throw e;
}
/** JSON.parse, but integers beyond 2**53 (e.g. time_ns) become exact BigInts, as the decoder gives. */
function parseExact(text) {
  const tokens = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
  const big = [];
  const marked = text.replace(tokens, (t) =>
    (/^-?\d+$/.test(t) && !Number.isSafeInteger(Number(t)) ? `{"$exact_integer$":${big.push(BigInt(t)) - 1}}` : t));
  return JSON.parse(marked, (k, v) =>
    (v && typeof v === 'object' && Object.keys(v).length === 1 && '$exact_integer$' in v ? big[v.$exact_integer$] : v));
}

const vectors = files
  .map((f) => ({ file: f, spec: parseExact(readFileSync(new URL(f, dirUrl), 'utf8')) }))
  .filter(({ spec }) => Array.isArray(spec.decoders) && spec.decoders.includes('js'));

const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');

/** A decoded message in the vectors' JSON form. */
function normalize(m) {
  const b = m.body;
  let body = b;
  if (m.type === 'video') {
    body = { codec: b.codec, keyframe: b.keyframe, width: b.width, height: b.height, pts: String(b.pts),
      config_hex: hex(b.config), data_hex: hex(b.data) };
  } else if (m.type === 'audio') {
    body = { rate: b.rate, channels: b.channels, sample_format: b.sampleFormat, planar: b.planar, codec: b.codec,
      pts: String(b.pts), data_hex: hex(b.data) };
  } else if (m.type === 'tensor') {
    body = { dtype: b.dtype, shape: b.shape, strides: b.strides, data_hex: hex(b.data) };
  } else if (m.type === 'blob') {
    body = { mime: b.mime, name: b.name, data_hex: hex(b.data) };
  }
  return { type: m.type, stream: m.stream, seq: m.seq, timestamp_ns: String(m.timestampNs), encoding: m.encoding, body };
}

/** The expected message, with decimal strings accepted as JSON numbers too. */
function expected(e) {
  const body = e.body && e.body.pts !== undefined && typeof e.body.pts !== 'string' ? { ...e.body, pts: String(e.body.pts) } : e.body;
  return { type: e.type, stream: e.stream, seq: e.seq, timestamp_ns: e.timestamp_ns === undefined ? undefined : String(e.timestamp_ns),
    encoding: e.encoding, body };
}

test(`the vectors folder (${dir}) has vectors for the JS decoder`, () => {
  assert.ok(vectors.length > 0, `no vector in ${dir} lists "js" in its "decoders"`);
});

for (const { file, spec } of vectors) {
  test(`vector ${spec.name ?? file}: ${spec.description ?? ''}`, () => {
    const bin = new Uint8Array(readFileSync(new URL(file.replace(/\.json$/, '.bin'), dirUrl)));
    const limits = spec.limits ?? {};
    const decoder = new Decoder({
      ...(limits.max_frame_size != null && { maxFrameSize: limits.max_frame_size }),
      ...(limits.max_message_size != null && { maxMessageSize: limits.max_message_size }),
    });
    const feed = spec.feed ?? 'whole';
    assert.ok(feed === 'whole' || feed === 'bytewise', `unknown feed mode ${feed}`);
    const messages = [];
    let error = null;
    try {
      if (feed === 'bytewise') for (let i = 0; i < bin.length; i++) messages.push(...decoder.feed(bin.subarray(i, i + 1)));
      else messages.push(...decoder.feed(bin));
      decoder.end();
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      error = e;
    }
    assert.deepEqual(messages.map(normalize), (spec.messages ?? []).map(expected));
    if (spec.error) {
      assert.ok(error, `expected ProtocolError ${spec.error.code} at ${spec.error.offset}, got none`);
      assert.deepEqual({ code: error.code, offset: error.offset }, { code: spec.error.code, offset: spec.error.offset }, error.message);
    } else {
      assert.equal(error, null, `unexpected ${error?.message}`);
    }
  });
}
