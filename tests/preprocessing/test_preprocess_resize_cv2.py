"""Resize alone equals OpenCV: INTER_AREA shrinking, INTER_LINEAR growing."""
from __future__ import annotations

import numpy as np
import pytest

import thyrofast

cv2 = pytest.importorskip("cv2")


def _cv2_axis(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize one axis at a time with the interpolation the spec names for it."""
    h, w = img.shape
    if out_w != w:
        interp = cv2.INTER_AREA if out_w < w else cv2.INTER_LINEAR
        img = cv2.resize(img, (out_w, h), interpolation=interp)
    if out_h != h:
        interp = cv2.INTER_AREA if out_h < h else cv2.INTER_LINEAR
        img = cv2.resize(img, (out_w, out_h), interpolation=interp)
    return img


@pytest.mark.parametrize(
    "h,w,oh,ow",
    [(768, 1024, 224, 224), (600, 800, 299, 311), (97, 131, 224, 224), (50, 40, 200, 160), (224, 224, 224, 224),
     (480, 640, 480, 160), (37, 500, 100, 64), (3, 3, 2, 2), (2, 9, 5, 4)],
)
def test_resize_equals_opencv(h, w, oh, ow):
    rng = np.random.default_rng(h * 1000 + w)
    frame = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    got = thyrofast.preprocess(frame, size=(oh, ow), denoise="none", normalize="none")[0, 0]
    src = frame.astype(np.float32) / np.float32(255.0)
    if (oh <= h and ow <= w) or (oh >= h and ow >= w):
        # one cv2 call when both axes go the same way
        interp = cv2.INTER_AREA if (oh < h or ow < w) else cv2.INTER_LINEAR
        want = cv2.resize(src, (ow, oh), interpolation=interp)
    else:
        want = _cv2_axis(src, oh, ow)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
