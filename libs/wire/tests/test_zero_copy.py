"""Zero copy: a received packet's ``data`` is an isthmus.buffer.Buffer over the memory the frame
was received into, whether the transport hands whole ``bytes`` to receive_data or reads into
the memory get_buffer() lends it; Tensor.to_numpy() views that memory; send() hands out the
caller's payload memory, sliced, never copied."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from isthmus.buffer import Buffer
from isthmus.wire import (
    HEADER_SIZE,
    Blob,
    Connection,
    Hello,
    Role,
    Tensor,
    VideoPacket,
    default_streams,
)
from isthmus.wire._decoder import LARGE_FRAME

MB6 = 6 * 1024 * 1024
READ = 64 * 1024  # the transport reads at most this much at a time


def unchunked_streams() -> list[Any]:
    """The default table with chunk_size 0 (frames as large as the negotiated maximum)."""
    return [msgspec.structs.replace(s, chunk_size=0) for s in default_streams()]


def address(obj: Any) -> int:
    return int(np.frombuffer(obj, np.uint8).ctypes.data)


def big_tensor() -> np.ndarray[Any, Any]:
    return np.random.default_rng(3).standard_normal(MB6 // 4).astype("<f4").reshape(-1, 1024)


def test_the_welcome_carries_a_custom_stream_table(connect: Any) -> None:
    pair = connect(streams=unchunked_streams())
    assert [s.chunk_size for s in pair.welcome.streams] == [0] * 5
    assert pair.client.welcome.streams == pair.server.welcome.streams


@pytest.mark.parametrize("kind", ["tensor", "video"])
def test_whole_frame_in_one_receive_data_is_viewed_in_place(
    connect: Any, raw: Any, kind: str
) -> None:
    pair = connect(streams=unchunked_streams())
    if kind == "tensor":
        array = big_tensor()
        pair.server.queue(Tensor.from_array(array))
        payload = array.tobytes()
    else:
        payload = np.random.default_rng(4).bytes(MB6)
        pair.server.queue(VideoPacket(codec="h264", keyframe=True, config=b"SPS+PPS", data=payload))
    received = raw.join(pair.server.data_to_send())  # one bytes object, as from a socket read
    ((header, _),) = raw.frames(received)
    assert header.length == header.total > MB6  # one frame, not chunked
    pair.client.receive_data(received)
    (packet,) = pair.client.events()
    data = packet.data
    assert isinstance(data, Buffer)
    start = address(received)
    assert start <= data.address and data.address + data.nbytes <= start + len(received)
    if kind == "tensor":
        assert data.address == start + HEADER_SIZE + 64  # the 64-byte aligned data offset
        out = packet.to_numpy()
        assert out.ctypes.data == data.address  # to_numpy shares the memory
        assert np.shares_memory(out, np.frombuffer(received, np.uint8))
        assert not out.flags.writeable  # bytes are immutable
        np.testing.assert_array_equal(out, array)
    else:
        assert data.address == start + HEADER_SIZE + 24 + 7
        config = packet.config
        assert isinstance(config, Buffer)
        assert config.address == start + HEADER_SIZE + 24
        assert bytes(memoryview(config)) == b"SPS+PPS"
        assert bytes(memoryview(data)) == payload


class Reader:
    """A transport that reads through get_buffer/buffer_updated, at most ``READ`` bytes per
    read, and remembers the memory each read went into."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.reads: list[tuple[int, int]] = []  # (address, bytes written)

    def feed(self, data: bytes) -> list[Any]:
        pos = 0
        events = []
        while pos < len(data):
            view = self.conn.get_buffer(READ)
            n = min(len(view), READ, len(data) - pos)
            view[:n] = data[pos : pos + n]
            self.reads.append((Buffer(view).address, n))
            self.conn.buffer_updated(n)
            pos += n
            events += list(self.conn.events())
        return events

    def bytes_read_into(self, start: int, size: int) -> int:
        """How many bytes the transport wrote straight into [start, start + size)."""
        return sum(n for a, n in self.reads if start <= a and a + n <= start + size)


@pytest.mark.parametrize("kind", ["tensor", "video"])
def test_chunked_message_read_through_get_buffer_lands_in_its_own_memory(
    connect: Any, raw: Any, kind: str
) -> None:
    """Default streams: 256 KiB chunks on the data stream, 16 KiB on the video stream. Chunks
    of at least LARGE_FRAME are read straight into the message's memory."""
    pair = connect()
    if kind == "tensor":
        array = big_tensor()
        pair.server.queue(Tensor.from_array(array))
        prefix_len, chunk = 64, 256 * 1024
    else:
        payload = np.random.default_rng(5).bytes(MB6)
        pair.server.queue(VideoPacket(codec="av1", keyframe=True, data=payload))
        prefix_len, chunk = 24, 16 * 1024
    wire = raw.join(pair.server.data_to_send())
    frames = raw.frames(wire)
    total = frames[0][0].total
    assert len(frames) == -(-total // chunk)
    reader = Reader(pair.client)
    (packet,) = reader.feed(wire)
    data = packet.data
    assert isinstance(data, Buffer) and data.nbytes == total - prefix_len
    body = data.address - prefix_len  # the reassembled message starts here
    if chunk < LARGE_FRAME:
        # Small chunks (video's 16 KiB) come through the 64 KiB staging read and are copied
        # once into the message memory: a copy that size costs less than an extra read.
        assert bytes(memoryview(data)) == payload
        assert reader.bytes_read_into(body, total) < total
        return
    # Every chunk after the first was read straight into the message memory: at most the
    # first read (a header and the start of the first chunk) went through a staging buffer.
    direct = reader.bytes_read_into(body, total)
    assert direct >= total - READ
    for k in range(1, len(frames)):
        if k * (HEADER_SIZE + chunk) >= READ:  # chunks that start after the first read
            assert any(a == body + k * chunk for a, _ in reader.reads), f"chunk {k} was copied"
    # Header reads between chunks are only 32 bytes, so no payload byte lands elsewhere.
    staged = [n for a, n in reader.reads if not body <= a < body + total]
    assert sum(staged) == len(wire) - direct
    assert all(n == HEADER_SIZE for n in staged[1:])
    if kind == "tensor":
        out = packet.to_numpy()
        assert out.ctypes.data == data.address
        assert out.flags.writeable  # the memory belongs to the packet
        np.testing.assert_array_equal(out, array)
    else:
        assert bytes(memoryview(data)) == payload


def test_large_unchunked_frame_read_through_get_buffer(connect: Any, raw: Any) -> None:
    pair = connect(streams=unchunked_streams())
    array = big_tensor()
    pair.server.queue(Tensor.from_array(array))
    wire = raw.join(pair.server.data_to_send())
    reader = Reader(pair.client)
    (packet,) = reader.feed(wire)
    body = packet.data.address - 64
    assert reader.bytes_read_into(body, len(wire) - HEADER_SIZE) >= len(wire) - READ
    np.testing.assert_array_equal(packet.to_numpy(), array)


def test_large_frame_arriving_in_pieces_gets_memory_of_its_own(connect: Any, raw: Any) -> None:
    """Pieces given to receive_data may be reused by the caller: the payload is not kept in
    them (it is gathered in fresh memory), and it is intact."""
    pair = connect(streams=unchunked_streams())
    payload = np.random.default_rng(6).bytes(1 << 20)
    pair.server.queue(Blob(data=payload))
    wire = raw.join(pair.server.data_to_send())
    pieces = [bytearray(wire[i : i + 100_000]) for i in range(0, len(wire), 100_000)]
    for piece in pieces:
        pair.client.receive_data(piece)
    (blob,) = pair.client.events()
    for piece in pieces:
        a = address(piece)
        assert not a <= blob.data.address < a + len(piece)
        piece[:] = bytes(len(piece))
    assert bytes(memoryview(blob.data)) == payload


@pytest.mark.parametrize("chunked", [False, True])
def test_send_hands_out_the_payload_memory(connect: Any, chunked: bool) -> None:
    streams = None if chunked else unchunked_streams()
    pair = connect(streams=streams)
    array = np.arange(1 << 18, dtype="<u8")  # 2 MiB
    pair.server.queue(Tensor.from_array(array))
    buffers = pair.server.data_to_send()
    base = array.ctypes.data

    def inside(b: Any) -> bool:
        return isinstance(b, memoryview) and base <= Buffer(b).address < base + array.nbytes

    views = [b for b in buffers if inside(b)]
    assert sum(v.nbytes for v in views) == array.nbytes  # every payload byte by reference
    addresses = [Buffer(v).address for v in views]
    if chunked:
        # 256 KiB chunks of the body, which starts with 64 bytes of tensor fields
        assert addresses == [base] + [base + k * 256 * 1024 - 64 for k in range(1, 9)]
    else:
        assert addresses == [base]
    (got,) = pair.deliver_to_client(buffers)
    np.testing.assert_array_equal(got.to_numpy(), array)


def test_fortran_tensor_is_sent_without_a_copy(connect: Any) -> None:
    array = np.asfortranarray(np.arange(200_000, dtype="<f8").reshape(400, 500))
    pair = connect(streams=unchunked_streams())
    pair.server.queue(Tensor.from_array(array))
    buffers = pair.server.data_to_send()
    assert any(
        isinstance(b, memoryview) and Buffer(b).address == array.ctypes.data for b in buffers
    )
    (got,) = pair.deliver_to_client(buffers)
    out = got.to_numpy()
    assert out.flags.f_contiguous and out.strides == array.strides
    np.testing.assert_array_equal(out, array)


def test_small_packets_in_whole_reads_are_views_too(raw: Any) -> None:
    """The rule is about whole frames, not sizes: a small blob views the received bytes."""
    client = Connection(Role.CLIENT)
    client.send(Hello())
    server = Connection(Role.SERVER)
    server.receive_data(raw.control(Hello()))
    server.next_event()
    client.receive_data(raw.join(server.accept()))
    client.next_event()
    received = raw.join(server.send(Blob(data=b"tiny payload")))
    client.receive_data(received)
    (blob,) = client.events()
    assert blob.data.address == address(received) + len(received) - len(b"tiny payload")
