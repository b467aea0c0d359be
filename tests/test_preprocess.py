"""Letterbox geometry, its inverse, and the preprocessed tensor, on real frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import DEMO_VIDEO, read_frame, shared_media
from edgeyolo.errors import SourceError
from edgeyolo.frames import Letterbox
from edgeyolo.preprocess import Preprocessor, as_bgr


def reference_letterbox(img: np.ndarray, size: int = 640) -> np.ndarray:
    """Ultralytics' LetterBox(auto=False) written out step by step, then RGB, /255, CHW."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = round(w * r), round(h * r)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    if (new_w, new_h) != (w, h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114,) * 3)
    return (img[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)) / 255.0


@pytest.mark.parametrize(
    ("w", "h"),
    [
        (960, 540),
        (810, 1080),
        (1280, 720),
        (768, 576),
        (641, 479),
        (333, 777),
        (640, 640),
        (3840, 2160),
        (17, 1000),
    ],
)
def test_letterbox_geometry_matches_ultralytics(w, h):
    """Gain, resized size and padding follow Ultralytics, odd pixel at bottom/right."""
    lb = Letterbox.fit(w, h, 640, 640)
    r = min(640 / h, 640 / w)
    assert lb.gain == pytest.approx(r)
    assert (lb.new_w, lb.new_h) == (round(w * r), round(h * r))
    assert lb.pad_left == round((640 - lb.new_w) / 2 - 0.1)
    assert lb.pad_top == round((640 - lb.new_h) / 2 - 0.1)
    right = 640 - lb.new_w - lb.pad_left
    bottom = 640 - lb.new_h - lb.pad_top
    assert 0 <= right - lb.pad_left <= 1
    assert 0 <= bottom - lb.pad_top <= 1


@pytest.mark.parametrize(("w", "h"), [(960, 540), (810, 1080), (641, 479), (333, 777)])
def test_letterbox_roundtrip(w, h):
    """Source points mapped into the input and back land where they started."""
    lb = Letterbox.fit(w, h, 640, 640)
    rng = np.random.default_rng(1)
    src = rng.uniform([0, 0], [w, h], size=(200, 2)).astype(np.float32)
    gains = np.array([lb.new_w / w, lb.new_h / h], np.float32)
    inp = src * gains + np.array([lb.pad_left, lb.pad_top], np.float32)
    back = lb.points_to_source(inp.copy())
    np.testing.assert_allclose(back, src, atol=1e-3)
    boxes = np.concatenate([inp[:100], inp[100:]], axis=1)
    np.testing.assert_allclose(
        lb.boxes_to_source(boxes.copy()), np.concatenate([src[:100], src[100:]], axis=1), atol=1e-3
    )


def test_inverse_clips_to_image():
    """Points in the padding are clipped to the source image."""
    lb = Letterbox.fit(960, 540, 640, 640)
    pts = np.array([[-5.0, 0.0], [700.0, 639.0]], np.float32)
    out = lb.points_to_source(pts)
    assert out.min() >= 0
    assert out[:, 0].max() <= 960
    assert out[:, 1].max() <= 540


@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_preprocess_matches_reference_on_real_images(name):
    """The tensor equals the straightforward Ultralytics-style pipeline on real photos."""
    img = cv2.imread(str(shared_media(name)))
    out = np.empty((1, 3, 640, 640), np.float32)
    Preprocessor(640, 640)(img, out)
    np.testing.assert_allclose(out, reference_letterbox(img), atol=1e-6)


def test_preprocess_reuses_buffer_and_keeps_padding():
    """A second frame of the same size rewrites only the image; padding stays 114/255."""
    pre = Preprocessor(640, 640)
    out = np.empty((1, 3, 640, 640), np.float32)
    f0, f1 = read_frame(DEMO_VIDEO, 0), read_frame(DEMO_VIDEO, 60)
    pre(f0, out)
    pre(f1, out)
    np.testing.assert_allclose(out, reference_letterbox(f1), atol=1e-6)
    # a new size recomputes the geometry and the padding
    small = cv2.resize(f1, (300, 500))
    pre(small, out)
    np.testing.assert_allclose(out, reference_letterbox(small), atol=1e-6)


def test_new_buffer_at_a_freed_address_gets_padding():
    """Padding is tracked per live buffer, not per address: fresh buffers are always padded."""
    pre = Preprocessor(640, 640)
    frame = read_frame(DEMO_VIDEO, 0)
    for _ in range(5):  # np.empty often reuses the block just freed
        out = np.empty((1, 3, 640, 640), np.float32)
        out.fill(np.nan)
        pre(frame, out)
        np.testing.assert_allclose(out, reference_letterbox(frame), atol=1e-6)
        del out


def test_preprocess_rejects_wrong_buffer():
    with pytest.raises(ValueError, match="output buffer shape"):
        Preprocessor(640, 640)(read_frame(DEMO_VIDEO, 0), np.empty((1, 3, 320, 320), np.float32))


def test_as_bgr_converts_grey_bgra_and_16bit():
    frame = read_frame(DEMO_VIDEO, 0)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert as_bgr(grey).shape == (540, 960, 3)
    assert as_bgr(grey[:, :, None]).shape == (540, 960, 3)
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    np.testing.assert_array_equal(as_bgr(bgra), frame)
    deep = frame.astype(np.uint16) * 257
    np.testing.assert_array_equal(as_bgr(deep), frame)
    uhd = cv2.resize(frame, (3840, 2160))
    assert as_bgr(uhd).shape == (2160, 3840, 3)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4, 3), np.uint8), "outside"),
        (np.zeros((100, 100, 5), np.uint8), "5 channels"),
        (np.zeros((100, 100, 3), np.float32), "element type"),
        (np.zeros(100, np.uint8), "dimensions"),
    ],
)
def test_as_bgr_rejects_unusable_frames(image, match):
    with pytest.raises(SourceError, match=match):
        as_bgr(image)
