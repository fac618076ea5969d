"""Reading Server-Sent Events in the tests: a parser, and a client reading a live stream."""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Message:
    """One SSE message (``comment`` set for a comment line such as a heartbeat)."""

    id: str | None = None
    event: str | None = None
    data: str = ""
    comment: str | None = None
    retry: int | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def parse(text: str) -> list[Message]:
    """The messages of a piece of an SSE stream made of whole messages."""
    found = []
    for block in text.split("\n\n"):
        if not block:
            continue
        message = Message()
        data: list[str] = []
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                message.comment = value
            elif name == "id":
                message.id = value
            elif name == "event":
                message.event = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                message.retry = int(value)
        message.data = "\n".join(data)
        found.append(message)
    return found


def read_until_heartbeat(response: Any, limit: int = 500) -> list[Message]:
    """Events of a test client's streaming response up to its first heartbeat (it caught up)."""
    events: list[Message] = []
    chunks = iter(response.streaming_content)
    for _ in range(limit):
        for message in parse(next(chunks).decode()):
            if message.comment is not None:
                return events
            if message.event is not None:
                events.append(message)
    raise AssertionError(f"no heartbeat after {limit} chunks")


@dataclass
class LiveStream:
    """A plain HTTP client reading an SSE response line by line in a thread, as it arrives."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    messages: queue.Queue = field(default_factory=queue.Queue)
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)

    def open(self, timeout: float = 10.0) -> LiveStream:
        parts = urlsplit(self.url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                                headers={"Accept": "text/event-stream", **self.headers})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.response_headers = dict(self.response.getheaders())
        if self.status == 200:
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        return self

    def _read(self) -> None:
        block: list[str] = []
        try:
            while True:
                line = self.response.readline()
                if not line:
                    break
                text = line.decode().rstrip("\n")
                if text:
                    block.append(text)
                    continue
                if block:
                    for message in parse("\n".join(block) + "\n\n"):
                        self.messages.put(message)
                    block = []
        except Exception:  # noqa: BLE001 - closed by the test under the reading thread
            pass
        self.messages.put(None)

    def next_event(self, timeout: float = 10.0) -> Message:
        """The next event (heartbeats and retry lines skipped), within ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        while True:
            # Heartbeats come every second: the deadline covers them too, or a stream sending only
            # heartbeats would keep the test waiting for ever.
            message = self.messages.get(timeout=max(deadline - time.monotonic(), 0.001))
            if message is None:
                raise AssertionError("the stream ended")
            if message.event is not None:
                return message

    def events(self, count: int, timeout: float = 10.0) -> list[Message]:
        return [self.next_event(timeout) for _ in range(count)]

    def close(self) -> None:
        """Hang up (the server sees the client go), then let the reading thread finish."""
        sock = self.connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        thread = getattr(self, "thread", None)
        if thread is not None:
            thread.join(5)
        self.connection.close()
