"""Postprocessing: pure numpy functions from raw YOLO outputs to ``Detections``."""

from edgeyolo.postprocess.nms import nms
from edgeyolo.postprocess.yolo import Candidates, Detections, Thresholds, decode

__all__ = ["Candidates", "Detections", "Thresholds", "decode", "nms"]
