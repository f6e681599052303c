"""Atomic writes: a failure leaves the old file untouched and no temporary file behind."""
from __future__ import annotations

import pytest

from sfrs_core.io import atomic_path, atomic_write_json


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_successful_write_replaces(tmp_path):
    atomic_write_json(tmp_path / "sub" / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "sub" / "a.json", {"x": 2})
    assert (tmp_path / "sub" / "a.json").read_text().strip().endswith("}")
    assert '"x": 2' in (tmp_path / "sub" / "a.json").read_text()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.json"]
