"""Objects, not frames: a multi-object tracker, zones, lines and per-object lifecycle events.

``kalman`` (constant-velocity filter), ``tracker`` (ByteTrack-style association), ``zones``
(polygons and lines), ``lifecycle`` (per-object records, posture hysteresis), ``objects``
(all of it for one model on one camera), ``stage`` (the pipeline stage). The settings live
in ``edgeyolo.config.tracking``.
"""
