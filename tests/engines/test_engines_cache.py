"""Engine cache: content-addressed keys, atomic writes, manifests, hash checks before use."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from thyrofast.engines import engine_cache as ec
from thyrofast.engines.engine_cache import EngineCache, EngineCacheError, EngineKey, atomic_write_bytes

PROFILE = ((1, 1, 64, 64), (1, 1, 64, 64), (32, 1, 64, 64))


def key(**changes) -> EngineKey:
    base = dict(onnx_sha256="a" * 64, trt_version="10.9.0", gpu_name="NVIDIA H100 80GB HBM3",
                compute_capability="9.0", profile=PROFILE, options=(("workspace", 0),))
    base.update(changes)
    return EngineKey(**base)


@pytest.fixture
def cache(tmp_path):
    return EngineCache(tmp_path / "engines")


def test_digest_changes_with_every_field():
    k = key()
    variants = [
        key(onnx_sha256="b" * 64), key(trt_version="11.0.0"), key(gpu_name="NVIDIA L4"),
        key(compute_capability="8.9"), key(profile=((1, 1, 64, 64), (8, 1, 64, 64), (32, 1, 64, 64))),
        key(options=(("workspace", 1 << 30),)),
    ]
    digests = {v.digest for v in variants}
    assert k.digest not in digests and len(digests) == len(variants)
    assert key().digest == k.digest  # deterministic


def test_store_then_load_roundtrip_with_manifest(cache):
    k = key()
    data = os.urandom(4096)
    cache.store(k, data)
    assert cache.load(k) == data
    manifest = json.loads(cache.manifest_path(k).read_text())
    assert manifest["key"] == k.to_dict()
    assert manifest["engine_sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["bytes"] == len(data)
    # nothing but the entry (no temp files left behind)
    assert sorted(p.name for p in cache.root.iterdir()) == sorted([f"{k.digest}.engine", f"{k.digest}.json"])
    assert oct(cache.root.stat().st_mode & 0o777) == "0o700"


def test_get_or_build_builds_once(cache):
    calls = []

    def build():
        calls.append(1)
        return b"engine-bytes"

    assert cache.get_or_build(key(), build) == (b"engine-bytes", True)
    assert cache.get_or_build(key(), build) == (b"engine-bytes", False)
    assert len(calls) == 1
    # another TensorRT version or GPU is another entry: built again
    assert cache.get_or_build(key(trt_version="11.1.0"), build)[1] is True
    assert cache.get_or_build(key(gpu_name="NVIDIA L40S", compute_capability="8.9"), build)[1] is True
    assert len(calls) == 3


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap", "delete_engine", "bad_manifest", "foreign_manifest"])
def test_damaged_entry_is_rebuilt(cache, damage):
    k = key()
    good = b"\x01" * 1000
    cache.store(k, good)
    e, m = cache.engine_path(k), cache.manifest_path(k)
    if damage == "flip":
        b = bytearray(e.read_bytes())
        b[500] ^= 0xFF
        e.write_bytes(bytes(b))
    elif damage == "truncate":
        e.write_bytes(good[:999])
    elif damage == "swap":  # same size, other content (e.g. an engine planted by someone else)
        e.write_bytes(b"\x02" * 1000)
    elif damage == "delete_engine":
        e.unlink()
    elif damage == "bad_manifest":
        m.write_text("{not json")
    elif damage == "foreign_manifest":
        other = json.loads(m.read_text())
        other["key"]["trt_version"] = "8.6.1"
        m.write_text(json.dumps(other))
    assert cache.load(k) is None  # dropped, never returned
    assert not m.exists()
    rebuilt = []
    data, built = cache.get_or_build(k, lambda: rebuilt.append(1) or good)
    assert built and data == good and rebuilt == [1]


def test_damaged_entry_refused_when_policy_is_refuse(tmp_path):
    cache = EngineCache(tmp_path / "c", on_mismatch="refuse")
    k = key()
    cache.store(k, b"\x01" * 100)
    cache.engine_path(k).write_bytes(b"\x01" * 99 + b"\x00")
    with pytest.raises(EngineCacheError, match="SHA-256"):
        cache.load(k)
    with pytest.raises(EngineCacheError):
        cache.get_or_build(k, lambda: pytest.fail("must not rebuild under 'refuse'"))


def test_engine_without_manifest_is_not_trusted(cache):
    """A crash between writing the engine and its manifest leaves an uncommitted entry."""
    k = key()
    cache.root.mkdir(parents=True, mode=0o700)
    cache.engine_path(k).write_bytes(b"half-finished")
    assert cache.load(k) is None
    data, built = cache.get_or_build(k, lambda: b"fresh")
    assert built and data == b"fresh" and cache.load(k) == b"fresh"


def test_group_writable_cache_is_refused(cache):
    cache.store(key(), b"x")
    os.chmod(cache.root, 0o777)
    try:
        with pytest.raises(EngineCacheError, match="writable by group/others"):
            cache.load(key())
    finally:
        os.chmod(cache.root, 0o700)


def test_atomic_write_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ec.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # temp file removed


def test_timing_cache_is_per_version_and_gpu(cache):
    cache.write_timing_cache("10.9", "H100", "9.0", b"tc1")
    assert cache.read_timing_cache("10.9", "H100", "9.0") == b"tc1"
    assert cache.read_timing_cache("11.0", "H100", "9.0") == b""
    assert cache.read_timing_cache("10.9", "L4", "8.9") == b""


def test_default_cache_dir_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv("THYROFAST_CACHE_DIR", str(tmp_path))
    assert ec.default_cache_dir() == tmp_path / "engines"
    monkeypatch.delenv("THYROFAST_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ec.default_cache_dir() == tmp_path / "xdg" / "thyrofast" / "engines"


def test_bad_policy_rejected(tmp_path):
    with pytest.raises(ValueError):
        EngineCache(tmp_path, on_mismatch="ignore")
