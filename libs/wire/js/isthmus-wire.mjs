// isthmus-wire.mjs: browser-side decoder (and small encoder) of the Isthmus wire protocol.
// Spec: docs/libraries/wire.md. Dependency-free ES module for browsers and Node >= 20.
// All multi-byte integers are little-endian; u64/i64 fields are BigInt.

/** Magic bytes of every frame, as a two-character string ("IW" = 0x49 0x57). */
export const MAGIC = 'IW';
/** Framing version this module speaks. */
export const VERSION = 1;
/** Size of the frame header in bytes. */
export const HEADER_SIZE = 32;
/** Frame flag bits; bits 4-15 are reserved and must be 0. */
export const FLAGS = Object.freeze({ MSGPACK: 1, MORE: 2, CONTINUATION: 4, KEYFRAME: 8 });

const NAMES = {
  1: 'hello', 2: 'welcome', 3: 'goodbye', 4: 'error', 5: 'ping', 6: 'pong', 7: 'ack',
  8: 'request_keyframe', 9: 'stats', 10: 'pointer', 11: 'wheel', 12: 'key', 13: 'state_patch',
  64: 'video', 65: 'audio', 66: 'tensor', 67: 'blob',
};
/** Message types: `TYPES.byName.pointer === 10`, `TYPES.byCode[10] === 'pointer'`. */
export const TYPES = Object.freeze({
  byName: Object.freeze(Object.fromEntries(Object.entries(NAMES).map(([c, n]) => [n, Number(c)]))),
  byCode: Object.freeze(NAMES),
});
const BINARY_TYPES = new Set([64, 65, 66, 67]);
const CONTROL_KINDS = new Set(['control', 'state']);
const STREAM_KINDS = new Set(['control', 'state', 'video', 'audio', 'data']);

/** Default stream table (the welcome may replace it). `credits` 0 means no flow control. */
export const DEFAULT_STREAMS = Object.freeze([
  { id: 0, name: 'control', kind: 'control', credits: 0 },
  { id: 1, name: 'state', kind: 'state', credits: 0 },
  { id: 2, name: 'video', kind: 'video', credits: 4 },
  { id: 3, name: 'audio', kind: 'audio', credits: 0 },
  { id: 4, name: 'data', kind: 'data', credits: 0 },
].map(Object.freeze));

/** Video codec codes (byte 0 of a video body). */
export const VIDEO_CODECS = Object.freeze({ 0: 'raw', 1: 'h264', 2: 'hevc', 3: 'av1', 4: 'vp9', 5: 'jpeg' });
/** Audio sample formats (byte 6 of an audio body, low 7 bits; +128 means planar). */
export const SAMPLE_FORMATS = Object.freeze({ 1: 's16', 2: 's32', 3: 'f32', 4: 'u8', 5: 'f64' });
/** Audio codec codes (byte 7 of an audio body). */
export const AUDIO_CODECS = Object.freeze({ 0: 'pcm', 1: 'opus', 2: 'aac' });
/** Every ProtocolError code of the spec (the Decoder raises all but the last two, which are connection-level). */
export const ERROR_CODES = Object.freeze([
  'bad_magic', 'bad_version', 'unknown_type', 'reserved_flags', 'unknown_stream', 'frame_too_large',
  'message_too_large', 'bad_chunk', 'sequence', 'invalid_payload', 'truncated', 'credit_overrun',
  'unexpected_message',
]);

/**
 * A violation of the protocol by the peer.
 * `code` is one of ERROR_CODES; `offset` is the absolute offset of the offending byte, counted from
 * the first byte ever fed to the Decoder.
 */
export class ProtocolError extends Error {
  /** @param {string} code @param {number} offset @param {string} [detail] */
  constructor(code, offset, detail = '') {
    super(`${code} at byte ${offset}${detail ? `: ${detail}` : ''}`);
    this.name = 'ProtocolError';
    this.code = code;
    this.offset = offset;
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const UTF8_ENCODER = new TextEncoder();
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function toU8(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer || Object.prototype.toString.call(data) === '[object ArrayBuffer]') return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('expected a Uint8Array, another ArrayBuffer view or an ArrayBuffer');
}

const viewOf = (u8) => new DataView(u8.buffer, u8.byteOffset, u8.byteLength);

/**
 * Parse the 32-byte header at `offset` of `u8` without validating it (the Decoder validates).
 * @param {Uint8Array} u8 @param {number} [offset=0]
 * @returns {{magic: string, version: number, type: number, flags: number, stream: number,
 *   length: number, total: number, seq: bigint, timestampNs: bigint}}
 * @throws {RangeError} when fewer than 32 bytes are available at `offset`.
 */
export function parseHeader(u8, offset = 0) {
  const dv = new DataView(u8.buffer, u8.byteOffset + offset, HEADER_SIZE);
  return {
    magic: String.fromCharCode(u8[offset], u8[offset + 1]),
    version: u8[offset + 2],
    type: u8[offset + 3],
    flags: dv.getUint16(4, true),
    stream: dv.getUint16(6, true),
    length: dv.getUint32(8, true),
    total: dv.getUint32(12, true),
    seq: dv.getBigUint64(16, true),
    timestampNs: dv.getBigUint64(24, true),
  };
}

// ---------------------------------------------------------------------------------------------
// MessagePack

const MSGPACK_MAX_DEPTH = 256;

/**
 * Decode one MessagePack value that must span all of `data`.
 * Supports nil, bool, every int width (64-bit values are Numbers when safe, else BigInt),
 * float32/64, fixstr/str8/16/32 (strict UTF-8), bin8/16/32 (Uint8Array views into `data`),
 * fixarray/array16/32 and fixmap/map16/32 (plain objects; keys must be strings).
 * @param {Uint8Array|ArrayBuffer} data
 * @throws {Error} on ext types, the never-used byte 0xc1, non-string map keys, invalid UTF-8,
 *   truncated input, nesting deeper than 256 or trailing bytes.
 */
export function decodeMsgpack(data) {
  const u8 = toU8(data);
  const dv = viewOf(u8);
  let p = 0;
  const need = (k) => {
    if (p + k > u8.length) throw new Error(`msgpack: ${k} bytes needed at ${p}, input ends at ${u8.length}`);
  };
  const take = (k) => { need(k); p += k; return p - k; };
  const big = (v) => (v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : v);
  const str = (n) => { const at = take(n); return UTF8.decode(u8.subarray(at, at + n)); };
  const bin = (n) => { const at = take(n); return u8.subarray(at, at + n); };
  const array = (n, depth) => {
    need(n); // every element takes at least one byte: refuse absurd counts before allocating
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = value(depth + 1);
    return out;
  };
  const map = (n, depth) => {
    need(2 * n);
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = value(depth + 1);
      if (typeof key !== 'string') throw new Error(`msgpack: map key is not a string before ${p}`);
      const v = value(depth + 1);
      if (key === '__proto__') Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true });
      else out[key] = v;
    }
    return out;
  };
  function value(depth) {
    if (depth > MSGPACK_MAX_DEPTH) throw new Error('msgpack: nested too deeply');
    const t = u8[take(1)];
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t <= 0x8f) return map(t & 0x0f, depth);
    if (t <= 0x9f) return array(t & 0x0f, depth);
    if (t <= 0xbf) return str(t & 0x1f);
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8[take(1)]);
      case 0xc5: return bin(dv.getUint16(take(2)));
      case 0xc6: return bin(dv.getUint32(take(4)));
      case 0xca: return dv.getFloat32(take(4));
      case 0xcb: return dv.getFloat64(take(8));
      case 0xcc: return u8[take(1)];
      case 0xcd: return dv.getUint16(take(2));
      case 0xce: return dv.getUint32(take(4));
      case 0xcf: return big(dv.getBigUint64(take(8)));
      case 0xd0: return dv.getInt8(take(1));
      case 0xd1: return dv.getInt16(take(2));
      case 0xd2: return dv.getInt32(take(4));
      case 0xd3: return big(dv.getBigInt64(take(8)));
      case 0xd9: return str(u8[take(1)]);
      case 0xda: return str(dv.getUint16(take(2)));
      case 0xdb: return str(dv.getUint32(take(4)));
      case 0xdc: return array(dv.getUint16(take(2)), depth);
      case 0xdd: return array(dv.getUint32(take(4)), depth);
      case 0xde: return map(dv.getUint16(take(2)), depth);
      case 0xdf: return map(dv.getUint32(take(4)), depth);
      default: throw new Error(`msgpack: unsupported type byte 0x${t.toString(16)} at ${p - 1}`);
    }
  }
  const result = value(0);
  if (p !== u8.length) throw new Error(`msgpack: ${u8.length - p} trailing bytes at ${p}`);
  return result;
}

// ---------------------------------------------------------------------------------------------
// JSON with exact big integers (nanosecond timestamps are beyond 2**53), as BigInt like msgpack's.

const JSON_TOKEN = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
const BIG = '\u0000bigint'; // marker key / prefix, unlikely in real data (a NUL)

function parseJson(text) {
  const value = JSON.parse(text); // throws on invalid JSON
  if (!/\d{16}/.test(text)) return value;
  let found = false;
  const marked = text.replace(JSON_TOKEN, (t) => {
    if (!/^-?\d{16,}$/.test(t) || Number.isSafeInteger(Number(t))) return t;
    found = true;
    return `{"\\u0000bigint":"${t}"}`;
  });
  if (!found) return value;
  return JSON.parse(marked, (k, v) => (v !== null && typeof v === 'object' && typeof v[BIG] === 'string'
    && Object.keys(v).length === 1 ? BigInt(v[BIG]) : v));
}

function stringifyJson(obj) {
  return JSON.stringify(obj, (k, v) => (typeof v === 'bigint' ? `${BIG}${v}` : v))
    .replace(/"\\u0000bigint(-?\d+)"/g, '$1');
}

// ---------------------------------------------------------------------------------------------
// Binary packet bodies. `at(off)` maps a body offset to an absolute stream offset.

const fail = (code, offset, detail) => { throw new ProtocolError(code, offset, detail); };

/** The fixed fields of a packet; a shorter body is truncated at its start. */
function fixedPart(b, size, at, what) {
  if (b.length < size) fail('truncated', at(0), `${what} header needs ${size} bytes`);
  return viewOf(b);
}

function utf8Field(b, start, end, at, what) {
  try { return UTF8.decode(b.subarray(start, end)); } catch { return fail('invalid_payload', at(start), `${what} is not UTF-8`); }
}

function decodeVideo(b, at) {
  const dv = fixedPart(b, 24, at, 'video');
  if (!(b[0] in VIDEO_CODECS)) fail('invalid_payload', at(0), `unknown video codec ${b[0]}`);
  if (b[1] & ~1) fail('invalid_payload', at(1), 'reserved video flag bits set');
  if (dv.getUint16(2, true)) fail('invalid_payload', at(2), 'reserved video bytes are not 0');
  const configLen = dv.getUint32(12, true);
  if (24 + configLen > b.length) fail('truncated', at(12), `config_len ${configLen} exceeds the body`);
  return {
    codec: VIDEO_CODECS[b[0]], keyframe: (b[1] & 1) === 1,
    width: dv.getUint32(4, true), height: dv.getUint32(8, true), pts: dv.getBigInt64(16, true),
    config: b.subarray(24, 24 + configLen), data: b.subarray(24 + configLen),
  };
}

function decodeAudio(b, at) {
  const dv = fixedPart(b, 16, at, 'audio');
  if (!((b[6] & 0x7f) in SAMPLE_FORMATS)) fail('invalid_payload', at(6), `unknown sample format ${b[6]}`);
  if (!(b[7] in AUDIO_CODECS)) fail('invalid_payload', at(7), `unknown audio codec ${b[7]}`);
  return {
    rate: dv.getUint32(0, true), channels: dv.getUint16(4, true),
    sampleFormat: SAMPLE_FORMATS[b[6] & 0x7f], planar: (b[6] & 0x80) !== 0, codec: AUDIO_CODECS[b[7]],
    pts: dv.getBigInt64(8, true), data: b.subarray(16),
  };
}

// numpy dtype strings a tensor may carry: plain numbers only (the Python side's rule).
const DTYPE = /^[<>|=]?(?:[biuf][1248]|c(?:8|16)|f16|b1|\?)$/;

function decodeTensor(b, at) {
  const dv = fixedPart(b, 8, at, 'tensor');
  const ndim = b[0], dtypeLen = b[1], dataOffset = dv.getUint32(4, true);
  if (ndim > 32) fail('invalid_payload', at(0), `ndim ${ndim} > 32`);
  if (dv.getUint16(2, true)) fail('invalid_payload', at(2), 'reserved tensor bytes are not 0');
  if (8 + dtypeLen > b.length) fail('truncated', at(1), `dtype_len ${dtypeLen} exceeds the body`);
  const dtype = String.fromCharCode(...b.subarray(8, 8 + dtypeLen));
  if (!DTYPE.test(dtype)) fail('invalid_payload', at(8), 'dtype is not a plain numeric numpy dtype');
  const shapeAt = (8 + dtypeLen + 7) & ~7, stridesAt = shapeAt + 8 * ndim, headerEnd = stridesAt + 8 * ndim;
  if (headerEnd > b.length) fail('truncated', at(0), `ndim ${ndim} needs ${headerEnd} header bytes`);
  const shape = [], strides = [];
  for (let i = 0; i < ndim; i++) {
    shape.push(dv.getBigUint64(shapeAt + 8 * i, true));
    strides.push(dv.getBigInt64(stridesAt + 8 * i, true));
    if (strides[i] < 0n) fail('invalid_payload', at(stridesAt + 8 * i), `negative stride ${strides[i]}`);
  }
  if (dataOffset < headerEnd) fail('invalid_payload', at(4), `data_offset ${dataOffset} overlaps the header`);
  if (dataOffset > b.length) fail('truncated', at(4), `data_offset ${dataOffset} exceeds the body`);
  // Bytes the array reaches: sum((n - 1) * stride) + itemsize, or 0 for an empty array.
  const itemsize = BigInt(dtype.replace(/\D/g, '') || 1);
  const extent = shape.includes(0n) ? 0n : shape.reduce((e, n, i) => e + (n - 1n) * strides[i], itemsize);
  if (extent > BigInt(b.length - dataOffset)) fail('truncated', at(shapeAt), 'shape and strides reach past the data');
  for (let i = 0; i < ndim; i++) { // only with a 0 stride or an empty dimension elsewhere
    if (shape[i] > MAX_SAFE) fail('invalid_payload', at(shapeAt + 8 * i), 'shape beyond 2**53');
    if (strides[i] > MAX_SAFE) fail('invalid_payload', at(stridesAt + 8 * i), 'stride beyond 2**53');
  }
  return { dtype, shape: shape.map(Number), strides: strides.map(Number), data: b.subarray(dataOffset) };
}

function decodeBlob(b, at) {
  const dv = fixedPart(b, 4, at, 'blob');
  const mimeLen = dv.getUint16(0, true), nameLen = dv.getUint16(2, true);
  if (4 + mimeLen > b.length) fail('truncated', at(0), `mime_len ${mimeLen} exceeds the body`);
  if (4 + mimeLen + nameLen > b.length) fail('truncated', at(2), `name_len ${nameLen} exceeds the body`);
  return {
    mime: utf8Field(b, 4, 4 + mimeLen, at, 'mime'),
    name: utf8Field(b, 4 + mimeLen, 4 + mimeLen + nameLen, at, 'name'),
    data: b.subarray(4 + mimeLen + nameLen),
  };
}

const BINARY_DECODERS = { 64: decodeVideo, 65: decodeAudio, 66: decodeTensor, 67: decodeBlob };

// ---------------------------------------------------------------------------------------------
// Decoder

function streamTable(list, onError) {
  if (!Array.isArray(list)) return onError('streams is not an array');
  const table = new Map();
  for (const s of list) {
    if (s === null || typeof s !== 'object' || !Number.isInteger(s.id) || s.id < 0 || s.id > 0xffff
      || typeof s.name !== 'string' || !STREAM_KINDS.has(s.kind)
      || (s.credits !== undefined && !(Number.isInteger(s.credits) && s.credits >= 0))) {
      return onError('a stream needs an id (u16), a name, a known kind and credits >= 0');
    }
    table.set(s.id, Object.freeze({ ...s }));
  }
  return table;
}

/**
 * Sans-IO decoder: bytes in, messages out. Feed it every byte received, in order.
 *
 * Error state: on a protocol violation the decoder stops parsing and remembers the ProtocolError.
 * If the violation is found before any message of the current feed() was decoded, feed() throws
 * it; otherwise feed() returns the messages decoded before the bad frame and the error is thrown
 * by the next feed() or end() (it is also visible at once as `decoder.error`). From then on
 * every feed() and end() throws that same error.
 *
 * Messages: {type, typeCode, stream, seq (Number), timestampNs (BigInt), encoding ('json' |
 * 'msgpack' | 'binary'), body}. Control bodies are plain objects as sent, not checked against
 * the message schemas; integers beyond 2**53 in them are BigInt (JSON and MessagePack alike).
 * Zero copy: when a (non-chunked) frame arrives inside one fed buffer, the message's binary
 * fields are views into that buffer, so do not reuse a buffer after feeding it.
 * A welcome whose body has `streams` replaces the stream table. Credits are not checked here
 * (that is the connection's job).
 */
export class Decoder {
  #maxFrame; #maxMessage; #streams;
  #nextSeq = new Map(); // stream id -> next expected seq (BigInt)
  #chunks = new Map(); // stream id -> message being reassembled
  #pos = 0; // absolute offset of the next byte to be fed
  #hdr = new Uint8Array(HEADER_SIZE); #hdrLen = 0; // header split over feeds
  #frame = null; // frame whose header is parsed and whose payload is incomplete
  #error = null; #ended = false;

  /**
   * @param {{maxFrameSize?: number, maxMessageSize?: number,
   *   streams?: Array<{id: number, name: string, kind: string, credits?: number}>}} [options]
   */
  constructor({ maxFrameSize = 16 * 1024 * 1024, maxMessageSize = 256 * 1024 * 1024, streams = DEFAULT_STREAMS } = {}) {
    this.#maxFrame = maxFrameSize;
    this.#maxMessage = maxMessageSize;
    this.#streams = streamTable(streams, (why) => { throw new TypeError(why); });
  }

  /** The current stream table (the defaults, or the one adopted from a welcome). */
  get streams() { return [...this.#streams.values()]; }
  /** The ProtocolError the decoder stopped on, or null. */
  get error() { return this.#error; }
  /** Number of bytes fed so far. */
  get offset() { return this.#pos; }

  /**
   * Decode as many complete messages as `data` finishes.
   * @param {Uint8Array|ArrayBuffer} data
   * @returns {Array<object>} messages, in the order their last frame arrived
   * @throws {ProtocolError} see the class comment for when
   */
  feed(data) {
    if (this.#error) throw this.#error;
    if (this.#ended) throw new Error('feed() after end()');
    const u8 = toU8(data);
    const out = [];
    try {
      this.#consume(u8, out);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.#error = e;
      if (out.length === 0) throw e;
    }
    return out;
  }

  /**
   * Signal the end of the input.
   * @throws {ProtocolError} the remembered error, or `truncated` at the start of a frame left
   *   incomplete, or else at the start of the first frame of a chunked message left incomplete.
   */
  end() {
    if (this.#error) throw this.#error;
    this.#ended = true;
    if (this.#frame || this.#hdrLen) {
      const start = this.#frame ? this.#frame.start : this.#pos - this.#hdrLen;
      throw (this.#error = new ProtocolError('truncated', start, 'input ended inside a frame'));
    }
    if (this.#chunks.size) {
      const start = Math.min(...[...this.#chunks.values()].map((m) => m.start));
      throw (this.#error = new ProtocolError('truncated', start, 'input ended inside a chunked message'));
    }
  }

  #consume(u8, out) {
    const base = this.#pos, n = u8.length;
    let i = 0;
    while (i < n) {
      if (!this.#frame) {
        const start = base + i - this.#hdrLen;
        if (this.#hdrLen === 0 && n - i >= HEADER_SIZE) {
          this.#startFrame(parseHeader(u8, i), start);
          i += HEADER_SIZE;
        } else {
          const k = Math.min(HEADER_SIZE - this.#hdrLen, n - i);
          this.#hdr.set(u8.subarray(i, i + k), this.#hdrLen);
          this.#hdrLen += k;
          i += k;
          if (this.#hdrLen < HEADER_SIZE) break;
          this.#hdrLen = 0;
          this.#startFrame(parseHeader(this.#hdr), start);
        }
      }
      const f = this.#frame, need = f.h.length - f.filled;
      if (f.filled === 0 && n - i >= need) { // whole payload in this buffer: a view, no copy
        f.payload = u8.subarray(i, i + need);
        i += need;
      } else {
        const k = Math.min(need, n - i);
        if (k === 0) break;
        f.payload ??= new Uint8Array(f.h.length);
        f.payload.set(u8.subarray(i, i + k), f.filled);
        f.filled += k;
        i += k;
        if (f.filled < f.h.length) break;
      }
      this.#frame = null;
      this.#endFrame(f, out);
    }
    this.#pos = base + n;
  }

  // Every check of a frame that its header alone allows, in this order (the Python decoder's).
  #startFrame(h, start) {
    if (h.magic !== MAGIC) fail('bad_magic', start, 'not an Isthmus wire frame');
    if (h.version !== VERSION) fail('bad_version', start + 2, `version ${h.version}`);
    if (!(h.type in NAMES)) fail('unknown_type', start + 3, `type ${h.type}`);
    if (h.flags & ~0x0f) fail('reserved_flags', start + 4, `flags 0x${h.flags.toString(16)}`);
    const stream = this.#streams.get(h.stream);
    if (!stream) fail('unknown_stream', start + 6, `stream ${h.stream}`);
    if (h.length > this.#maxFrame) fail('frame_too_large', start + 8, `length ${h.length} > ${this.#maxFrame}`);
    if (h.total > this.#maxMessage) fail('message_too_large', start + 12, `total ${h.total} > ${this.#maxMessage}`);
    if (BINARY_TYPES.has(h.type) === CONTROL_KINDS.has(stream.kind)) {
      fail('invalid_payload', start + HEADER_SIZE, `${NAMES[h.type]} is not allowed on a stream of kind ${stream.kind}`);
    }
    const badChunk = (why) => fail('bad_chunk', start + 4, why);
    const more = (h.flags & FLAGS.MORE) !== 0;
    let msg = this.#chunks.get(h.stream);
    if (h.flags & FLAGS.CONTINUATION) {
      if (!msg) badChunk('continuation without a start');
      if (h.type !== msg.h.type || h.seq !== msg.h.seq || h.total !== msg.h.total || h.timestampNs !== msg.h.timestampNs) {
        badChunk('continuation does not match the message it continues (type/seq/total/timestamp)');
      }
      const sum = msg.received + h.length;
      if (sum > h.total || (!more && sum !== h.total)) badChunk(`chunk lengths add up to ${sum}, total is ${h.total}`);
      msg.received = sum;
    } else {
      if (msg) badChunk('new message inside a chunked one');
      const expected = this.#nextSeq.get(h.stream) ?? 0n;
      if (h.seq !== expected) fail('sequence', start + 16, `seq ${h.seq}, expected ${expected}`);
      this.#nextSeq.set(h.stream, expected + 1n);
      if (more ? h.length >= h.total : h.length !== h.total) badChunk(`length ${h.length} does not fit total ${h.total}`);
      msg = { h, start, payloadStart: start + HEADER_SIZE, received: h.length, pieces: [], map: [] };
      if (more) this.#chunks.set(h.stream, msg);
    }
    this.#frame = { h, start, msg, payload: null, filled: 0 };
  }

  #endFrame(f, out) {
    const { msg } = f;
    if (f.h.length) { msg.map.push([msg.received - f.h.length, f.start + HEADER_SIZE]); msg.pieces.push(f.payload); }
    if (f.h.flags & FLAGS.MORE) return;
    this.#chunks.delete(f.h.stream);
    let body;
    if (msg.pieces.length === 1) body = msg.pieces[0];
    else {
      body = new Uint8Array(msg.h.total);
      let o = 0;
      for (const piece of msg.pieces) { body.set(piece, o); o += piece.length; }
    }
    out.push(this.#decodeMessage(msg, body));
  }

  #decodeMessage(msg, body) {
    const { h, payloadStart, map } = msg;
    const at = (off) => { // body offset -> absolute offset, through the chunks' positions
      for (let j = map.length - 1; j >= 0; j--) if (map[j][0] <= off) return map[j][1] + off - map[j][0];
      return payloadStart + off;
    };
    const binary = BINARY_TYPES.has(h.type);
    const message = {
      type: NAMES[h.type], typeCode: h.type, stream: h.stream, seq: Number(h.seq), timestampNs: h.timestampNs,
      encoding: binary ? 'binary' : (h.flags & FLAGS.MSGPACK ? 'msgpack' : 'json'), body: null,
    };
    if (binary) {
      message.body = BINARY_DECODERS[h.type](body, at);
      return message;
    }
    let obj;
    try {
      obj = message.encoding === 'msgpack' ? decodeMsgpack(body) : parseJson(UTF8.decode(body));
    } catch (e) {
      fail('invalid_payload', payloadStart, e.message);
    }
    if (obj === null || typeof obj !== 'object' || Object.getPrototypeOf(obj) !== Object.prototype) {
      fail('invalid_payload', payloadStart, 'control body is not an object/map');
    }
    if (message.type === 'welcome' && obj.streams !== undefined) {
      this.#streams = streamTable(obj.streams, (why) => fail('invalid_payload', payloadStart, why));
    }
    message.body = obj;
    return message;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding (what a browser client sends: pointer, key, wheel, ack, ...)

/**
 * Build one frame: the 32-byte header followed by a copy of `body`.
 * For a chunk of a larger message pass `flags` with MORE/CONTINUATION and the message's `total`.
 * @param {{type: string|number, stream?: number, seq: number|bigint, timestampNs?: bigint|number,
 *   flags?: number, body?: Uint8Array|ArrayBuffer, total?: number}} frame
 * @returns {Uint8Array}
 */
export function encodeFrame({ type, stream = 0, seq, timestampNs = 0n, flags = 0, body = new Uint8Array(0), total }) {
  const code = typeof type === 'string' ? TYPES.byName[type] : type;
  if (!(code in NAMES)) throw new TypeError(`unknown message type ${type}`);
  if (seq === undefined) throw new TypeError('seq is required');
  if (!Number.isInteger(stream) || stream < 0 || stream > 0xffff) throw new RangeError(`bad stream ${stream}`);
  if (!Number.isInteger(flags) || flags < 0 || flags > 0x0f) throw new RangeError(`bad flags ${flags}`);
  const payload = toU8(body);
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const dv = viewOf(out);
  out[0] = 0x49; out[1] = 0x57; out[2] = VERSION; out[3] = code;
  dv.setUint16(4, flags, true);
  dv.setUint16(6, stream, true);
  dv.setUint32(8, payload.length, true);
  dv.setUint32(12, total ?? payload.length, true);
  dv.setBigUint64(16, BigInt(seq), true);
  dv.setBigUint64(24, BigInt(timestampNs), true);
  out.set(payload, HEADER_SIZE);
  return out;
}

/**
 * Build a control frame with a JSON body (BigInt values are written as exact integers).
 * `stream` defaults to the type's default stream (1 for state_patch, else 0).
 * @param {string} typeName e.g. 'pointer' @param {object} obj the body
 * @param {{stream?: number, seq: number|bigint, timestampNs?: bigint|number}} options
 * @returns {Uint8Array}
 */
export function encodeControl(typeName, obj, { stream, seq, timestampNs = 0n } = {}) {
  const code = TYPES.byName[typeName];
  if (code === undefined || BINARY_TYPES.has(code)) throw new TypeError(`${typeName} is not a control message type`);
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new TypeError('a control body is an object');
  const body = UTF8_ENCODER.encode(stringifyJson(obj));
  return encodeFrame({ type: code, stream: stream ?? (code === 13 ? 1 : 0), seq, timestampNs, body });
}
