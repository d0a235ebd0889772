"""iceoryx2 channels: a pipeline exchanges audio with an iceoryx2 publisher in another process."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isthmus.pipeline import AudioChunk, EndOfStream, Pipeline, Session

pytest.importorskip("iceoryx2", reason="the iceoryx2 extra is not installed")


def _service(tag: str) -> str:
    return f"isthmus-test/{tag}/{os.getpid()}"


@pytest.mark.asyncio
async def test_a_pipeline_receives_audio_published_by_another_process(tmp_path: Path) -> None:
    service = _service("in")
    p = Pipeline()
    p.add("iox", "iceoryx_source", service=service, idle_timeout=20.0)
    p.add("out", "output")
    p.connect("iox", "out")
    got: list[Any] = []
    async with Session(p, negotiate=False, on_output=lambda _n, x: got.append(x)) as s:
        script = tmp_path / "pub.py"
        script.write_text(
            textwrap.dedent(f"""
            import numpy as np
            from isthmus.pipeline import AudioChunk, EndOfStream
            from isthmus.pipeline._iceoryx import IceoryxPublisher
            pub = IceoryxPublisher({service!r}, 1 << 16)
            pub.wait_for_subscribers(1)
            for k in range(25):
                x = (np.arange(960, dtype=np.float32) + k).reshape(-1, 1)
                pub.publish(AudioChunk(x, 48000, k * 0.02))
            pub.publish(EndOfStream())
            assert pub.wait_until_unsubscribed(20)  # the pipeline read everything and left
            pub.close()
        """)
        )
        proc = await asyncio.create_subprocess_exec(sys.executable, str(script))
        assert await proc.wait() == 0
        await asyncio.wait_for(s.wait(), 30)
    assert len(got) == 25
    for k, c in enumerate(got):
        assert (
            isinstance(c, AudioChunk)
            and c.sample_rate == 48000
            and c.pts == pytest.approx(k * 0.02)
        )
        assert np.array_equal(c.samples[:, 0], np.arange(960, dtype=np.float32) + k)


@pytest.mark.asyncio
async def test_a_pipeline_publishes_to_an_iceoryx2_subscriber() -> None:
    from isthmus.pipeline._iceoryx import IceoryxSubscriber

    service = _service("out")
    sub = IceoryxSubscriber(service)
    try:
        p = Pipeline()
        p.add("in", "input")
        p.add("iox", "iceoryx_sink", service=service, subscribers=1)
        p.connect("in", "iox")
        async with Session(p, negotiate=False) as s:
            for k in range(5):
                await s.push("in", AudioChunk(np.full((320, 2), k, np.int16), 16000, k * 0.02))
            await s.end("in")
            await s.wait()
            # While the sink lives: a publisher's samples go with it when it closes.
            items = [await asyncio.to_thread(sub.receive, 5.0) for _ in range(6)]
    finally:
        sub.close()
    assert [int(it[1].samples[0, 0]) for it in items[:5]] == [0, 1, 2, 3, 4]  # type: ignore[index]
    assert items[0][1].channels == 2 and items[0][1].format == "s16"  # type: ignore[index]
    assert isinstance(items[5][1], EndOfStream)  # type: ignore[index]
