from __future__ import annotations

import asyncio

import pytest
import trio

from isthmus.buffer import AsyncRing, Ring, RingClosedError, WaitTimeoutError


def test_asyncio_recv_waits_without_blocking_the_loop(impl: str, name: str) -> None:
    async def main() -> list[bytes]:
        prod = AsyncRing(Ring.create(name, 4096))
        cons = AsyncRing(Ring.open(name))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        recv = asyncio.create_task(cons.recv(timeout=10))
        await asyncio.sleep(0.1)
        assert not recv.done() and ticks >= 3  # the loop kept running while recv waited
        await prod.send(b"one")
        msg = await recv
        got = [msg.tobytes()]
        cons.release()  # releases `msg`
        assert msg.released
        await prod.send(b"two")
        msg = await cons.recv(timeout=1)
        got.append(msg.tobytes())
        cons.release()
        t.cancel()
        prod.close()
        with pytest.raises(RingClosedError):
            await cons.recv(timeout=5)
        cons.close()
        return got

    assert asyncio.run(main()) == [b"one", b"two"]


def test_asyncio_cancelled_recv_loses_nothing(impl: str, name: str) -> None:
    async def main() -> bytes:
        prod = Ring.create(name, 4096)
        cons = AsyncRing(Ring.open(name))
        task = asyncio.create_task(cons.recv())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        prod.send(b"kept")
        msg = await asyncio.wait_for(cons.recv(), 5)
        data = msg.tobytes()
        msg.release()
        cons.close()
        prod.close()
        return data

    assert asyncio.run(main()) == b"kept"


def test_asyncio_timeout_and_full_ring(impl: str, name: str) -> None:
    async def main() -> None:
        prod = AsyncRing(Ring.create(name, 1024))
        cons = AsyncRing(Ring.open(name))
        with pytest.raises(WaitTimeoutError):
            await cons.recv(timeout=0.05)
        for _ in range(4):
            await prod.send(bytes(100))
        sender = asyncio.create_task(prod.send(bytes(300), timeout=10))
        await asyncio.sleep(0.05)
        assert not sender.done()
        for _ in range(4):
            (await cons.recv()).release()
        await asyncio.wait_for(sender, 10)
        buf = await prod.loan(16)
        buf[:] = b"0123456789abcdef"
        prod.commit()
        msg = await cons.recv()
        assert msg.nbytes == 300
        msg.release()
        msg = await cons.recv()
        assert msg.tobytes() == b"0123456789abcdef"
        cons.release()
        cons.close()
        prod.close()

    asyncio.run(main())


def test_trio(impl: str, name: str) -> None:
    async def main() -> list[bytes]:
        prod = AsyncRing(Ring.create(name, 4096))
        cons = AsyncRing(Ring.open(name))
        got: list[bytes] = []

        async def reader() -> None:
            for _ in range(3):
                msg = await cons.recv(timeout=10)
                got.append(msg.tobytes())
                msg.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(0.05)
            for word in (b"a", b"bb", b"ccc"):
                await prod.send(word)
        with trio.move_on_after(0.05):
            await cons.recv()  # cancelled by trio while sleeping in the worker thread
        prod.ring.send(b"after cancel")
        msg = await cons.recv(timeout=5)
        got.append(msg.tobytes())
        msg.release()
        cons.close()
        prod.close()
        return got

    assert trio.run(main) == [b"a", b"bb", b"ccc", b"after cancel"]
