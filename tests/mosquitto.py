"""A real mosquitto broker for tests, on a free loopback port, optionally with TLS or passwords.

mosquitto comes from the distribution (``apt-get install mosquitto``; .ci/run installs it).
Without the binary, tests are skipped with the reason, except in CI (``CI=true``), where a
missing broker is a failure: CI must not pass by testing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from typing_extensions import Self

from helpers import LOOPBACK, REPO, free_port

HOST = LOOPBACK


def mosquitto_binary() -> str:
    """Path of the mosquitto binary; skip (or fail in CI) when it is not installed."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )
    if found:
        return found
    msg = "mosquitto is not installed (apt-get install mosquitto): MQTT tests need a real broker"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@dataclass
class TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost, made with openssl."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, folder: Path) -> TlsFiles:
        if not shutil.which("openssl"):
            msg = "openssl is not installed (apt-get install openssl): the TLS test makes its CA"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(msg)
            pytest.skip(msg)
        folder.mkdir(parents=True, exist_ok=True)

        def ssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        # Extensions as Python 3.13's default (strict X.509) verification wants them.
        ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=edgeyolo test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        ssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
        (folder / "ext.cnf").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "authorityKeyIdentifier=keyid\n"
            "subjectKeyIdentifier=hash\n"
        )
        ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2",
            "-extfile", "ext.cnf")  # fmt: skip
        return cls(folder / "ca.crt", folder / "server.crt", folder / "server.key")


@dataclass
class Mosquitto:
    """One mosquitto process; ``start``/``stop`` may be repeated (same port: a restart)."""

    folder: Path
    port: int = field(default_factory=free_port)
    tls: TlsFiles | None = None
    users: dict[str, str] | None = None
    # Keep sessions across restarts and queue QoS 0 messages for offline persistent
    # subscribers, so a test can count every message published while it was away.
    persistent: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}"

    def _config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {HOST}",
            *(
                [
                    "persistence true",
                    f"persistence_location {self.folder}/",
                    "queue_qos0_messages true",
                ]
                if self.persistent
                else ["persistence false"]
            ),
            "log_dest file " + str(self.folder / "mosquitto.log"),
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to user 'mosquitto', who cannot read pytest's tmp dirs.
            lines.append("user root")
        if self.users:
            pw = self.folder / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pw), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
            ]
        conf = self.folder / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> None:
        binary = mosquitto_binary()
        if self.users and not shutil.which("mosquitto_passwd"):
            pytest.skip("mosquitto_passwd is not installed")
        conf = self._config()
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                if self.proc.stderr:
                    self.proc.stderr.close()
                pytest.fail(f"mosquitto exited with {self.proc.returncode}: {err}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"mosquitto did not listen on {HOST}:{self.port} within {timeout}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.time() when the subscriber got it

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """A real MQTT subscriber (aiomqtt) that records every message on its topic filters."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        *,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
        identifier: str | None = None,
        persistent_session: bool = False,
    ) -> None:
        self.port = port
        self.identifier = identifier or f"test-collector-{id(self)}"
        # A persistent session (clean_session off) is kept by the broker while we are away.
        self.persistent_session = persistent_session
        self.topics = topics
        self.tls = tls
        self.username, self.password = username, password
        self.messages: list[Received] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None

    async def __aenter__(self) -> Self:
        ctx = None
        if self.tls:
            import ssl

            ctx = ssl.create_default_context(cafile=str(self.tls.ca))
        self._client = aiomqtt.Client(
            HOST,
            self.port,
            tls_context=ctx,
            username=self.username,
            password=self.password,
            identifier=self.identifier,
            clean_session=False if self.persistent_session else None,
        )
        await self._client.__aenter__()
        for t in self.topics:
            await self._client.subscribe(t, qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._client is not None
        with contextlib.suppress(aiomqtt.MqttError):
            async for m in self._client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                self.messages.append(Received(str(m.topic), payload, m.retain, time.time()))
                self._changed.set()

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Received | None:
        got = self.on(topic)
        return got[-1] if got else None

    async def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "") -> None:
        """Wait until ``predicate(self)`` is true; fail naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                topics = sorted({m.topic for m in self.messages})
                pytest.fail(f"timed out after {timeout}s waiting for {what}; topics seen: {topics}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))


SCHEMA_PATH = REPO / "docs" / "mqtt-schema.json"
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "number": (int, float),
    "integer": int,
}


def validate(payload: Any, kind: str) -> None:
    """Check ``payload`` against ``$defs/<kind>`` of docs/mqtt-schema.json.

    A small validator for the keywords that schema uses (type, required, properties, items,
    enum, const, minimum, maximum, minItems, maxItems, allOf, $ref), so the documented
    schema is what the tests hold the payloads to, without a jsonschema dependency.
    """
    schema = json.loads(SCHEMA_PATH.read_text())
    _check(payload, schema["$defs"][kind], schema, kind)


def _check(value: Any, s: dict[str, Any], root: dict[str, Any], path: str) -> None:
    def fail(why: str) -> None:
        pytest.fail(f"{path}: {why} (value: {value!r})")

    if "$ref" in s:
        _check(value, root["$defs"][s["$ref"].rsplit("/", 1)[1]], root, path)
    for sub in s.get("allOf", []):
        _check(value, sub, root, path)
    if "const" in s and value != s["const"]:
        fail(f"expected {s['const']!r}")
    if "enum" in s and value not in s["enum"]:
        fail(f"expected one of {s['enum']}")
    if "type" in s:
        names = s["type"] if isinstance(s["type"], list) else [s["type"]]
        ok = any(
            isinstance(value, _TYPES[n])
            and not (n in {"integer", "number"} and value is True)
            and not (n in {"integer", "number"} and value is False)
            for n in names
        )
        if not ok:
            fail(f"expected type {names}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in s and value < s["minimum"]:
            fail(f"below minimum {s['minimum']}")
        if "maximum" in s and value > s["maximum"]:
            fail(f"above maximum {s['maximum']}")
    if isinstance(value, dict):
        for key in s.get("required", []):
            if key not in value:
                fail(f"missing required key {key!r}")
        for key, sub in s.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, root, f"{path}.{key}")
    if isinstance(value, list):
        if "minItems" in s and len(value) < s["minItems"]:
            fail(f"fewer than {s['minItems']} items")
        if "maxItems" in s and len(value) > s["maxItems"]:
            fail(f"more than {s['maxItems']} items")
        if "items" in s:
            for i, item in enumerate(value):
                _check(item, s["items"], root, f"{path}[{i}]")
