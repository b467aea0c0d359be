"""Real results for the view tests: the four demo models (ONNX Runtime) on real frames.

Produces ``FrameResult`` objects as the pipeline's stages see them, without the pipeline, so
the drawing, live view, HTTP and snapshot code can be tested on what real models really
detect in the demo video. ``with_tracks`` adds track ids the way a tracker stage would.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import onnxruntime as ort

from conftest import DEMO_VIDEO, MODELS
from edgeyolo.engines.onnxruntime import inspect_model
from edgeyolo.frames import Frame
from edgeyolo.postprocess import Detections, Thresholds, decode
from edgeyolo.preprocess import Preprocessor
from edgeyolo.stages import FrameResult, ModelOutput

DEMO_MODELS = {
    "det-fp32": MODELS / "edgeyolo-demo-det.onnx",
    "det-int8": MODELS / "edgeyolo-demo-det-int8.onnx",
    "pose-fp32": MODELS / "edgeyolo-demo-pose.onnx",
    "pose-int8": MODELS / "edgeyolo-demo-pose-int8.onnx",
}


class RealModels:
    """The demo models, run one after another on the CPU."""

    def __init__(self, names: list[str] | None = None) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.models = []
        for name, path in DEMO_MODELS.items():
            if names is not None and name not in names:
                continue
            info = inspect_model(path)
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            self.models.append((name, info, sess))
        self.pre = Preprocessor(640, 640)
        self.blob = np.empty((1, 3, 640, 640), np.float32)

    def run(self, camera: str, seq: int, image: np.ndarray) -> FrameResult:
        frame = Frame(camera, seq, image, time.time(), time.monotonic_ns())
        lb = self.pre(image, self.blob)
        outputs = []
        for name, info, sess in self.models:
            t = time.perf_counter()
            raw = sess.run(None, {sess.get_inputs()[0].name: self.blob})[0]
            infer_ms = (time.perf_counter() - t) * 1e3
            dets: Detections = decode(raw, lb, Thresholds(), info.num_classes, info.kpt_shape)
            labels = [info.names.get(i, str(i)) for i in range(info.num_classes)]
            outputs.append(ModelOutput(name, info.task, labels, dets, infer_ms))
        return FrameResult(camera, frame, outputs)


def demo_frames(n: int, start: int = 0, step: int = 1) -> list[np.ndarray]:
    """``n`` frames of the demo video from ``start``, every ``step``-th."""
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    out = []
    i = 0
    try:
        while len(out) < n:
            ok, img = cap.read()
            assert ok, f"{DEMO_VIDEO}: only {i} frames"
            if i >= start and (i - start) % step == 0:
                out.append(img)
            i += 1
    finally:
        cap.release()
    return out


def with_tracks(result: FrameResult, ids_per_model: dict[str, list[int]]) -> FrameResult:
    """``result`` with track ids set on the named models' detections (others unchanged)."""
    outputs = []
    for o in result.outputs:
        ids = ids_per_model.get(o.model)
        if ids is None:
            outputs.append(o)
            continue
        d = o.detections
        tracked = Detections(
            d.boxes, d.scores, d.class_ids, d.keypoints, np.asarray(ids[: len(d)], np.int64)
        )
        outputs.append(ModelOutput(o.model, o.task, o.labels, tracked, o.infer_ms))
    return FrameResult(result.camera, result.frame, outputs)
