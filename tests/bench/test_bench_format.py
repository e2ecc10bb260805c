"""`thyrofast bench` tables: the absolute target beside a ratio is printed and counted (no timing here)."""
import argparse

import pytest

from thyrofast import cli
from thyrofast.bench.preprocess_bench import format_rows
from thyrofast.cli import bench as bench_cli
from thyrofast.cli._errors import CommandError


def _row(median_ms, limit_ms=None):
    r = {"case": "area->srad(10)->percentile", "ours": {"median_ms": median_ms, "p99_ms": median_ms},
         "peer": "p", "peer_timing": {"median_ms": 10.0}, "ratio": 10.0 / median_ms, "target": 5.0,
         "kind": "speedup", "pass": True}
    if limit_ms is not None:
        r.update(limit_ms=limit_ms, limit_pass=median_ms <= limit_ms)
    return r


def test_absolute_target_is_printed_with_its_verdict():
    text = format_rows({"device": "cpu", "rows": [_row(1.2, 1.0), _row(0.8, 1.0), _row(0.8)]})
    lines = [line.strip() for line in text.splitlines()]
    assert "absolute: median 1.200 ms, target <= 1 ms  FAIL" in lines
    assert "absolute: median 0.800 ms, target <= 1 ms  PASS" in lines
    assert sum("absolute:" in line for line in lines) == 2  # a row without a limit prints none


def test_a_missed_absolute_target_is_listed(monkeypatch, capsys):
    import thyrofast.bench as bench

    monkeypatch.setattr(bench, "bench_preprocess_cpu", lambda rounds: {"device": "cpu", "rows": [_row(1.2, 1.0)]})
    args = argparse.Namespace(what="preprocess", device="cpu", rounds=5, bundle=None, threads=1, json=None,
                              check=False)
    assert bench_cli.main(args) == 0
    assert "1 target(s) missed: area->srad(10)->percentile" in capsys.readouterr().out
    args.check = True  # a CI gate
    assert bench_cli.main(args) == 1


def test_bad_bench_arguments_are_one_line_errors(monkeypatch, capsys):
    import thyrofast.bench as bench

    def no_gpu(rounds):
        raise RuntimeError("no CUDA device")

    monkeypatch.setattr(bench, "bench_preprocess_cuda", no_gpu)
    base = dict(what="preprocess", device="cpu", rounds=5, bundle=None, threads=1, json=None, check=False)
    for change, msg in (({"rounds": 0}, "--rounds must be >= 5"), ({"threads": 0}, "--threads must be >= 1"),
                        ({"device": "cuda"}, "no CUDA device")):
        # a failing command raises CommandError; thyrofast.cli.main prints it and exits with its code
        with pytest.raises(CommandError) as e:
            bench_cli.main(argparse.Namespace(**{**base, **change}))
        assert e.value.code == 2 and e.value.message.startswith(f"error: {msg}")
        argv = ["bench", "preprocess", "--rounds", str(change.get("rounds", 5)), "--threads",
                str(change.get("threads", 1)), "--device", change.get("device", "cpu")]
        assert cli.main(argv) == 2
        assert f"thyrofast bench: error: {msg}" in capsys.readouterr().err
