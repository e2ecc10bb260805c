"""One Classifier shared by many threads gives the serial answers, bit for bit (issue 22, item 1).

Before: the engines' input buffers (and ORT bindings, OpenVINO infer requests)
were one set per batch size, shared by every thread, so a thread's frames were
overwritten by another's between preprocessing and run: wrong probabilities
with no error (and "Infer Request is busy" from OpenVINO).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from thyrofast.classifier import Classifier

import _bundle_fixture as fx

N_THREADS = 8
ROUNDS = 3


@pytest.fixture(scope="module")
def calls():
    frames = fx.phantom(24, seed=5)[0]
    # Mostly the same batch size (so threads contend for the same buffer), some others,
    # and one list of mixed sizes (one core call per frame into the shared rows).
    out = []
    for i in range(48):
        k = i % 24
        if i % 7 == 3:
            out.append(frames[k:k + 3])
        elif i % 11 == 5:
            out.append([frames[k], np.kron(frames[(k + 1) % 24], np.ones((2, 2), np.uint8))])
        else:
            out.append(frames[k:k + 1])
    return out


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_shared_classifier_from_8_threads_matches_serial(bundle_dir, calls, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    clf = Classifier.load(bundle_dir, backend=backend, device="cpu", precision="fp32", threads=1)
    serial = [np.asarray(clf.predict(c)) for c in calls]
    got: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(N_THREADS)

    def worker(t: int) -> None:
        try:
            start.wait()
            for r in range(ROUNDS):
                # each thread walks the calls from its own offset, so different
                # frames meet in the same batch-size buffer at the same time
                for j in range(len(calls)):
                    i = (j + 5 * t) % len(calls)
                    got[(t, r * len(calls) + i)] = np.asarray(clf.predict(calls[i]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, f"{len(errors)} thread errors, first: {errors[0]!r}"
    assert len(got) == N_THREADS * ROUNDS * len(calls)
    wrong = [(t, k) for (t, k), p in got.items() if not np.array_equal(p, serial[k % len(calls)])]
    assert not wrong, f"{len(wrong)}/{len(got)} threaded results differ from the serial ones"
    clf.close()


def test_stand_in_engine_without_per_thread_buffers_is_serialized(bundle_dir):
    """An engine that is not ``concurrent`` (CUDA torch, TensorRT) runs under the Classifier's lock."""
    clf = Classifier.load(bundle_dir, backend="onnxruntime", precision="fp32", threads=1)
    inner = clf.engine
    active = []
    overlap = []

    class OneAtATime:
        concurrent = False
        backend, precision, device, max_batch = inner.backend, inner.precision, inner.device, inner.max_batch
        stream = None

        def __init__(self):
            self._bufs = {}

        def input_buffer(self, n):
            active.append(1)
            if len(active) > 1:
                overlap.append(1)
            return self._bufs.setdefault(n, np.zeros((n, *inner.input_shape), np.float32))

        def run(self, x):
            try:
                return inner.run(x.copy())
            finally:
                active.pop()

    frames = fx.phantom(6, seed=2)[0]
    serial = np.asarray(clf.predict(frames[:1]))
    shared = Classifier(clf.bundle, OneAtATime(), clf.preprocessor)
    results = []

    def worker():
        for _ in range(20):
            results.append(np.asarray(shared.predict(frames[:1])))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not overlap
    assert all(np.array_equal(r, serial) for r in results)
