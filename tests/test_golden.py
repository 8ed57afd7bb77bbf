"""Outputs byte for byte as tests/golden/ holds them (scripts/golden.py wrote them; a change that
moves a byte of output must rerun it and say why in its commit)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import REPO

_spec = importlib.util.spec_from_file_location("golden", REPO / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(golden)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", sorted(golden.CASES))
def test_outputs_match_the_golden_files(name: str, tmp_path: Path) -> None:
    golden.run(name, tmp_path)
    for f in golden.FILES:
        want = (golden.GOLDEN / name / f).read_bytes()
        assert (tmp_path / f).read_bytes() == want, f"{name}/{f} differs from tests/golden (rerun scripts/golden.py if the change is meant)"
