"""Offline, a hub model that is not cached fails before the command loads torch: one line naming
the role's flag and variable, exit 5, from ``index``, ``index --captions`` and ``caption``,
whether the client is offline (HF_HUB_OFFLINE) or the Hub does not answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import probe_cli, write_images

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], env: dict[str, str]) -> tuple[int, set[str], str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("BLIPSEARCH_", "HF_"))}
    full.update({"PYTHONPATH": str(ROOT), "HF_HOME": env.pop("HF_HOME"), **env})
    code, modules, _, err = probe_cli(args, full, timeout=300)
    return code, {m.split(".")[0] for m in modules}, err


@pytest.mark.parametrize(
    "hub", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}], ids=["offline", "unreachable"]
)
@pytest.mark.parametrize(
    ("command", "flag"),
    [(["index", "IMGS", "-c", "x"], "--model"), (["caption", "IMG"], "--caption-model")],
    ids=["index", "caption"],
)
def test_an_uncached_hub_model_fails_before_torch_loads(tmp_path, hub, command, flag):
    imgs = write_images(tmp_path / "imgs", 1)
    args = [{"IMGS": str(tmp_path / "imgs"), "IMG": str(imgs[0])}.get(a, a) for a in command]
    env = {"BLIPSEARCH_DATA_DIR": str(tmp_path / "data"), "HF_HOME": str(tmp_path / "hf"), **hub}
    code, modules, err = _run(args, env)
    assert code == 5, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Could not load"), err
    assert flag + " DIR" in lines[0] and "Traceback" not in err
    assert not modules & {"torch", "transformers"}, sorted(modules & {"torch", "transformers"})


def test_index_with_captions_checks_the_caption_model_too(tmp_path, tiny_models):
    write_images(tmp_path / "imgs", 1)
    args = ["index", str(tmp_path / "imgs"), "-c", "x", "--captions", "--model", str(tiny_models["blip-itm"])]
    env = {"BLIPSEARCH_DATA_DIR": str(tmp_path / "data"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    code, modules, err = _run(args, env)
    assert code == 5 and "--caption-model DIR" in err, err
    assert "torch" not in modules
    assert not (tmp_path / "data" / "collections" / "x").exists()  # nothing was written
