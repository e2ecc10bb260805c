"""``thyrofast study``: run a pre-specified study protocol (docs/study_protocol.md), resumably.

>>> from thyrofast.study import run_study
>>> report = run_study("full", "study-v1/")        # or "quick", or a protocol JSON file

Each replicate x rung (a full pretrain -> train -> predict) is one unit whose
per-patient predictions are written atomically when it finishes; a rerun skips
finished units and resumes an interrupted one.  The report (``report.md``,
``report.json``) gives every unit, the mean ± SD over replicates, the pooled
paired tests the protocol fixes, and lists missing units: never a best-of.
"""
from __future__ import annotations

from typing import Callable

from .runner import PROTOCOLS, Study, load_protocol

__all__ = ["run_study", "load_protocol", "Study", "PROTOCOLS"]


def run_study(protocol="full", out="thyrofast-study", *, quick: bool = False, rungs: list[str] | None = None,
              replicates: list[str] | None = None, workers: int = 2, device: str = "auto", progress: bool = True,
              log: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) ``protocol`` in folder ``out``; returns the report dict.

    ``quick``: the packaged tiny protocol (CI) instead of ``protocol``.  ``rungs`` /
    ``replicates``: run only these units now (the report covers every finished
    unit and lists the rest as missing), e.g. to run the study in pieces.
    """
    kw = {} if log is None else {"log": log}
    study = Study("quick" if quick else protocol, out, workers=workers, device=device, progress=progress, **kw)
    return study.run(rungs=rungs, replicates=replicates)
