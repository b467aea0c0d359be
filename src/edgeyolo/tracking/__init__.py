"""Objects, not frames: a multi-object tracker, zones, lines and per-object lifecycle events.

``tracker`` (ByteTrack-style association over ``kalman``), ``zones`` (polygons, lines),
``lifecycle`` (per-object records), ``stage`` (the per-camera pipeline stage). Its settings live in
``edgeyolo.config.tracking``.
"""
