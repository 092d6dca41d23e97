"""Tests for `clef_jax.files`: atomic writes keep the old contents when a write fails."""

import pytest

from clef_jax import files


def test_atomic_write_text_replaces_whole_file(tmp_path):
  path = tmp_path / "a.json"
  path.write_text("old")
  assert files.atomic_write_text(path, "new") == path
  assert path.read_text() == "new"
  assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failing_write_renames_nothing(tmp_path):
  a, b = tmp_path / "a.txt", tmp_path / "b.txt"
  a.write_text("old a")

  def fail(tmp):
    tmp.write_text("half")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    files.atomic_write_all({a: lambda tmp: tmp.write_text("new a"), b: fail})
  assert a.read_text() == "old a" and not b.exists()
  assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # No temporary file left.
  files.atomic_write_all(
    {a: lambda tmp: tmp.write_text("new a"), b: lambda tmp: tmp.write_text("new b")}
  )
  assert (a.read_text(), b.read_text()) == ("new a", "new b")
