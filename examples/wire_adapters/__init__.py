"""I/O adapters for ``isthmus.wire``: templates to copy into an application.

* ``aio.py``: asyncio (TCP/TLS) adapter and the transport-independent ``WireSession``.
* ``websocket.py``: the same session over WebSocket messages (the ``websockets`` library).
* ``demo.py``: a runnable server/client streaming fake video and state patches.
"""
