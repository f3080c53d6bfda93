from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_llama():
    """A 2-layer Llama over the built-in item vocabulary, for numerical tests."""
    from sdporec.modeling import BuiltinSize, build_builtin

    titles = [f"Artist {i}" for i in range(40)] + ["Air", "Air Supply", "Answer"]
    model, codec = build_builtin(titles, BuiltinSize(hidden=32, layers=2, heads=4), seed=0)
    return model.float(), codec


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real data file missing: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
