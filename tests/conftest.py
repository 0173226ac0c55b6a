from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.s3server import s3, s3_server  # noqa: F401  (fixtures: a real S3 API on loopback)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

# The suite's exactness contracts (1e-5 / 1e-4 against the transformers forward) hold in the
# ``exact`` precision mode; the product default is ``fast`` (bf16 on CPUs with native bf16).
# Every Settings() built by a test, and every `blipsearch` subprocess a test starts, runs
# exact unless the test asks for fast (tests/test_precision.py does).
os.environ.setdefault("BLIPSEARCH_PRECISION", "exact")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from make_test_models import make_all

    return make_all(tmp_path_factory.mktemp("models"), size="tiny", seed=0)


@pytest.fixture(scope="session")
def blip_embedder(tiny_models: dict[str, Path]):
    from models import load_embedder

    return load_embedder(str(tiny_models["blip-itm"]), device="cpu", batch_size=8, precision="exact")


@pytest.fixture(scope="session")
def blip2_embedder(tiny_models: dict[str, Path]):
    from models import load_embedder

    return load_embedder(str(tiny_models["blip2-itm"]), device="cpu", batch_size=8, precision="exact")


@pytest.fixture
def settings(tmp_path: Path):
    from blipsearch.config import Settings

    # Exactness tests compare stored embeddings with the model run on the fully decoded image,
    # so they pin the full decode; JPEG draft decoding has its own tolerance tests
    # (tests/test_decode_draft.py).
    return Settings(
        data_dir=tmp_path / "data", batch_size=8, shard_size=16, decode_workers=2, jpeg_draft=False, precision="exact"
    )


@pytest.fixture(scope="session")
def tiny_generators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny InstructBLIP (T5) and LLaVA (CLIP + LLaMA) checkpoints (scripts/make_test_generators.py)."""
    from make_test_generators import make_generators

    return make_generators(tmp_path_factory.mktemp("generators"), seed=0)
