"""atheris target: thyrofast.read raises InputError, never anything else, on any bytes.

Run: python tests/fuzz/fuzz_readers.py -max_total_time=60 [seed corpus dir]
Seeds with real DICOM/PNG headers come from tests/fuzz/seeds (made on first run).
"""
import os
import sys
import tempfile

import atheris

# thyrofast imports its readers lazily: import them (and the decoders they
# drive) here so that atheris instruments them and coverage guides the search
with atheris.instrument_imports():
    import PIL.Image  # noqa: F401  (imported to be instrumented)
    import pydicom  # noqa: F401

    import thyrofast
    import thyrofast.io
    import thyrofast.io.dicom
    import thyrofast.io.images
    import thyrofast.io.reader
    import thyrofast.io.regions
    from thyrofast import InputError

EXTS = [".dcm", ".png", ".jpg", ".bmp", ".tif", ""]
_DIR = tempfile.mkdtemp(prefix="tf-fuzz-")


def one_input(data: bytes) -> None:
    if not data:
        return
    ext = EXTS[data[0] % len(EXTS)]
    path = os.path.join(_DIR, "input" + ext)
    with open(path, "wb") as f:
        f.write(data[1:])
    try:
        frames = thyrofast.read(path, max_bytes=64 << 20)
    except InputError:
        return
    for fr in frames:
        assert fr.pixels.dtype.kind == "u" and fr.pixels.dtype.itemsize in (1, 2)


def main(argv):
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
