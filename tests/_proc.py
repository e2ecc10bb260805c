"""Process facts the hardening tests measure (Linux /proc)."""
from __future__ import annotations


def rss_kib() -> int:
    """Resident set size of this process in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")
