"""The CLI dispatcher: every command imports and parses; info and preprocess run."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from thyrofast import cli


def test_top_level_help_lists_every_command(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    assert f"thyrofast {name}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["demo", "synth", "pretrain", "train", "export", "predict", "evaluate"])
def test_every_long_command_takes_no_progress(name, capsys):
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(cli.COMMANDS[name][0]).add_arguments(parser)
    assert "--no-progress" in parser.format_help()
    assert any(a.dest == "no_progress" for a in parser._actions)


def test_unknown_command_fails(capsys):
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])


def test_version(capsys):
    import thyrofast

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == thyrofast.__version__


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["core"]["version"] == info["thyrofast"]
    assert {"onnxruntime", "torch"} <= set(info["backends"])


def test_preprocess_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    img = tmp_path / "frame.png"
    Image.fromarray(rng.integers(0, 256, size=(120, 160), dtype=np.uint8)).save(img)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "out"
    rc = cli.main(["preprocess", str(img), str(bad), "--out", str(out), "--size", "32", "48", "--png"])
    assert rc == 1  # one input failed, and said so
    x = np.load(out / "frame.npy")
    assert x.shape == (1, 1, 32, 48) and x.dtype == np.float32
    assert (out / "frame_000.png").exists()
    assert "bad.png" in capsys.readouterr().err


def test_preprocess_command_keeps_same_named_inputs_apart_and_refuses_bad_options(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.fromarray(rng.integers(0, 256, size=(40, 50), dtype=np.uint8)).save(tmp_path / d / "f.png")
    out = tmp_path / "out"
    assert cli.main(["preprocess", str(tmp_path / "a" / "f.png"), str(tmp_path / "b" / "f.png"), "--out", str(out),
                     "--size", "16", "16"]) == 0
    a, b = np.load(out / "f.npy"), np.load(out / "f-2.npy")
    assert a.shape == b.shape == (1, 1, 16, 16) and not np.array_equal(a, b)
    capsys.readouterr()
    img = str(tmp_path / "a" / "f.png")
    for bad, msg in ((["--size", "0", "0"], "size"), (["--srad-iterations", "-1"], "srad_iterations")):
        assert cli.main(["preprocess", img, "--out", str(out)] + bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("thyrofast preprocess: error:") and msg in err and "Traceback" not in err
    assert cli.main(["preprocess", img, "--out", img]) == 2  # an existing file, not a folder
    assert "cannot make the output folder" in capsys.readouterr().err


def test_shared_options_offer_what_the_library_accepts():
    import argparse

    from thyrofast import Preprocessor, PreprocessParams
    from thyrofast.cli import _options
    from thyrofast.engines.base import BACKENDS, PRECISIONS
    from thyrofast.engines.select import DEVICES
    from thyrofast.io.schema import CROP_MODES

    for denoise in _options.denoise_choices():
        Preprocessor(PreprocessParams(denoise=denoise))
    for normalize in _options.normalize_choices():
        Preprocessor(PreprocessParams(normalize=normalize))
    p = argparse.ArgumentParser()
    for add in (_options.add_crop, _options.add_device, _options.add_backend, _options.add_precision):
        add(p)
    choices = {a.dest: tuple(a.choices) for a in p._actions if a.choices}
    assert choices["crop"] == CROP_MODES
    assert set(choices["device"]) == {*DEVICES, "auto"} and choices["device"][0] == "auto"
    assert choices["backend"] == ("auto", *BACKENDS) and choices["precision"] == ("auto", *PRECISIONS)
    q = argparse.ArgumentParser()
    _options.add_device(q, default="cpu", auto=False)
    assert q.parse_args([]).device == "cpu" and tuple(q._actions[-1].choices) == DEVICES


def test_a_failing_command_is_one_line_and_its_exit_code(monkeypatch, capsys):
    import sys
    import types

    from thyrofast.cli._errors import CommandError, reported

    def run(args):
        if args.how == "oserror":
            with reported(OSError, prefix="cannot write x: ", code=3, strerror=True):
                raise PermissionError(13, "Permission denied", "x")
        with reported(ValueError):
            raise ValueError("bad value")

    module = types.ModuleType("fake_command")
    module.add_arguments = lambda p: p.add_argument("how")
    module.main = run
    monkeypatch.setitem(sys.modules, "fake_command", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_command", "a command that fails"))
    assert cli.main(["fake", "oserror"]) == 3
    assert capsys.readouterr().err == "thyrofast fake: cannot write x: Permission denied\n"
    assert cli.main(["fake", "value"]) == 2
    assert capsys.readouterr().err == "thyrofast fake: error: bad value\n"
    with pytest.raises(CommandError) as e:  # called directly, the command raises; only main prints
        run(types.SimpleNamespace(how="value"))
    assert (e.value.message, e.value.code) == ("error: bad value", 2)


@pytest.mark.parametrize("command, module, function", [("train", "thyrofast.train.loop", "train"),
                                                       ("cv", "thyrofast.train.cv", "cross_validate")])
def test_mask_annotations_reaches_training(command, module, function, tmp_path, monkeypatch):
    """Issue 24: `train/cv --mask-annotations` ask the library for it; without the flag cv's plan is as before."""
    import importlib

    pytest.importorskip("torch")
    pytest.importorskip("torchvision")

    class Stop(Exception):
        pass

    seen = []

    def fake(*args, **kw):
        seen.append(kw)
        raise Stop

    monkeypatch.setattr(importlib.import_module(module), function, fake)
    for flag in (["--mask-annotations"], []):
        with pytest.raises(Stop):
            cli.main([command, str(tmp_path / "data"), "--out", str(tmp_path / "out"), *flag])
    assert seen[0]["mask_annotations"] is True
    if command == "train":
        assert seen[1]["mask_annotations"] is False
    else:  # cv passes it through only when asked: the cv.json of a run without it is unchanged
        assert "mask_annotations" not in seen[1]
