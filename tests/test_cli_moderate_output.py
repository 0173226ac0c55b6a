"""``moderate check``'s human output: each category's scores (the ITC screen with its best
prompt, the ITM confirmation) and whether it was hit, under the decision; ``--json`` has the
same numbers."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app
from tests.helpers import write_images

POLICY = """
name: shop
version: "1"
categories:
  - name: weapons
    prompts: ["a photo of a gun", "a rifle"]
    itc_threshold: 0.0
    itm_threshold: 0.0
    action: block
  - name: never
    prompts: ["a red circle"]
    itc_threshold: 1.0
    itm_threshold: 1.0
    action: flag
"""


def test_check_prints_each_categorys_scores(tmp_path, tiny_models):
    write_images(tmp_path / "imgs", 1)
    image = str(next((tmp_path / "imgs").iterdir()))
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    args = ["moderate", "check", image, "--policy", str(policy), "--model", str(tiny_models["blip-itm"])]
    args += ["--data-dir", str(tmp_path / "data")]
    runner = CliRunner()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    raw = json.loads(runner.invoke(app, [*args, "--json"]).stdout)["results"][0]
    cats = {c["name"]: c for c in raw["categories"]}
    lines = r.stdout.splitlines()
    assert lines[0] == f"{image}: BLOCK"
    weapons = next(line for line in lines if line.startswith("  weapons: "))
    w = cats["weapons"]
    assert f"screen {w['itc']:.3f} ({w['itc_prompt']})" in weapons
    assert f"itm {w['itm']:.3f} ({w['itm_prompt']})" in weapons and weapons.endswith("hit -> block")
    never = next(line for line in lines if line.startswith("  never: "))
    assert "below the screen threshold" in never and never.endswith("not hit") and "itm" not in never
    assert "{" not in r.stdout and "None" not in r.stdout  # no Python reprs
