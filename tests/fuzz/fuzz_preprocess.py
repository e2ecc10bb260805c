"""atheris target: thyrofast.preprocess never crashes and never silently casts.

Run: python tests/fuzz/fuzz_preprocess.py -max_total_time=60
Any exception other than TypeError/ValueError, a non-finite output for valid
parameters, or a native crash is a finding.
"""
import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    import thyrofast
    import thyrofast.preprocessing  # imported lazily by thyrofast: instrument it (all its modules) here

DTYPES = [np.uint8, np.uint16, np.int16, np.float32, np.bool_, np.int32]
DENOISE = ["none", "median3", "median5", "srad", "bogus"]
NORMALIZE = ["percentile", "minmax", "zscore", "none", "bogus"]


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    dtype = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    nd = fdp.ConsumeIntInRange(1, 5)
    shape = tuple(fdp.ConsumeIntInRange(0, 40) for _ in range(nd))
    if nd >= 3 and fdp.ConsumeBool():
        shape = shape[:-1] + (3,)
    n = int(np.prod(shape)) if shape else 0
    raw = fdp.ConsumeBytes(n * np.dtype(dtype).itemsize)
    buf = np.frombuffer(raw.ljust(n * np.dtype(dtype).itemsize, b"\0"), dtype=dtype)
    a = buf.reshape(shape) if n else np.zeros(shape, dtype)
    layout = fdp.ConsumeIntInRange(0, 3)
    if layout == 1 and a.ndim >= 2:
        a = a[::-1]
    elif layout == 2:
        a = np.asfortranarray(a)
    elif layout == 3 and a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder(">"))
    params = dict(
        size=(fdp.ConsumeIntInRange(0, 70), fdp.ConsumeIntInRange(0, 70)),
        denoise=DENOISE[fdp.ConsumeIntInRange(0, len(DENOISE) - 1)],
        normalize=NORMALIZE[fdp.ConsumeIntInRange(0, len(NORMALIZE) - 1)],
        srad_iterations=fdp.ConsumeIntInRange(-1, 4),
        srad_lambda=fdp.ConsumeFloatInRange(-0.5, 1.5),
        percentiles=(fdp.ConsumeFloatInRange(-5, 105), fdp.ConsumeFloatInRange(-5, 105)),
        std=fdp.ConsumeFloatInRange(-1, 2),
        channels=fdp.ConsumeIntInRange(0, 4),
        dtype=["float32", "float16"][fdp.ConsumeIntInRange(0, 1)],
        threads=fdp.ConsumeIntInRange(1, 3),
    )
    if fdp.ConsumeBool() and a.ndim >= 2:
        h, w = a.shape[-3:-1] if a.ndim >= 3 and a.shape[-1] == 3 else a.shape[-2:]
        params["roi"] = tuple(fdp.ConsumeIntInRange(-2, 45) for _ in range(4))
    try:
        out = thyrofast.preprocess(a, **params)
    except (TypeError, ValueError):
        return
    if out.dtype == np.float32 and not np.isfinite(out).all():
        raise AssertionError(f"non-finite output for {params} on {a.dtype} {a.shape}")


def main(argv):
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
