"""The one exception type for bad user input (files, folders, manifests).

Every reader raises :class:`InputError` with a stable ``code`` so batch tools
can record *why* an input failed without parsing messages.  Argument errors
in the Python API stay ``TypeError``/``ValueError``.
"""
from __future__ import annotations

__all__ = ["InputError", "INPUT_ERROR_CODES"]

#: Stable codes; add new ones at the end, never rename.
INPUT_ERROR_CODES = (
    "unreadable",  # cannot be opened or parsed at all
    "unsupported_format",  # a file type we do not open
    "unsupported_transfer_syntax",
    "missing_decoder",  # a decoder exists but is not installed
    "unsupported_photometric",
    "no_tissue_region",
    "doppler_region",
    "too_large",  # refused by the memory guard before decoding
    "bad_manifest",
    "bad_split",
    "empty",
    "timeout",
    "frame_out_of_range",  # a requested frame index the file does not have
    "frame_size_mismatch",  # an encoded frame's own size (JPEG SOF, J2K SIZ) differs from Rows x Columns
)


class InputError(Exception):
    """A user-supplied input cannot be used.  ``code`` is one of INPUT_ERROR_CODES."""

    def __init__(self, code: str, message: str, *, source: str | None = None):
        if code not in INPUT_ERROR_CODES:
            raise ValueError(f"unknown InputError code {code!r}")
        self.code = code
        self.source = source
        super().__init__(f"[{code}] {message}" + (f" ({source})" if source else ""))
