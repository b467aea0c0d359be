"""A real network camera for tests: MJPEG over HTTP (multipart/x-mixed-replace) on loopback.

What many IP cameras serve; OpenCV reads it through FFmpeg like any stream URL. ``stop`` cuts
it (the reader sees the stream end) and ``start`` brings it back on the same port.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from pathlib import Path

import cv2


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class MjpegCamera:
    """Serves the first ``frames`` frames of ``video`` in a loop at ``fps``."""

    def __init__(self, video: Path, port: int, frames: int = 30, fps: float = 15.0) -> None:
        cap = cv2.VideoCapture(str(video))
        self.jpegs: list[bytes] = []
        while len(self.jpegs) < frames:
            ok, img = cap.read()
            assert ok, f"{video}: cannot read frame {len(self.jpegs)}"
            self.jpegs.append(cv2.imencode(".jpg", img)[1].tobytes())
        cap.release()
        self.port = port
        self.period = 1.0 / fps
        self._server: _Server | None = None
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> None:
        camera = self
        self._stop = stop = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not stop.is_set():
                        jpg = camera.jpegs[i % len(camera.jpegs)]
                        i += 1
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                        self.wfile.write(head % len(jpg) + jpg + b"\r\n")
                        time.sleep(camera.period)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
