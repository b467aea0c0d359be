"""The HTTP side: health, metrics, the status page, camera pictures and streams, access."""

from edgeyolo.http.server import HttpServer

__all__ = ["HttpServer"]
