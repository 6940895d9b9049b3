"""The contract (protos/) as buf sees it: lint-clean (STANDARD + COMMENTS), and no breaking
change against the last release's image (protos/releases/), so that a client generated from
the released .proto keeps working. The check itself is checked: a renumbered field and a
renamed enum value must be caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchd.v1 import batch_pb2

ROOT = Path(__file__).parents[2]
BUF = Path(sys.executable).parent / "buf"
RELEASES = sorted((ROOT / "protos" / "releases").glob("*.binpb"),
                  key=lambda p: tuple(int(n) for n in p.stem.split(".")))


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_contract_is_lint_clean_with_standard_and_comments() -> None:
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contract_is_formatted_as_buf_formats_it() -> None:
    result = buf("format", "--diff", "--exit-code")
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_is_a_released_contract_to_compare_with() -> None:
    assert RELEASES, "no image in protos/releases/ (scripts/release-contract makes one)"


def test_the_contract_does_not_break_the_last_release() -> None:
    result = buf("breaking", "protos", "--against", str(RELEASES[-1]))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("old", "new", "finding"), [
    ("string handler = 1;", "string handler = 9;", "handler"),
    ("OPERATOR_ILIKE = 10;", "OPERATOR_CASE_INSENSITIVE_LIKE = 10;", "OPERATOR_ILIKE"),
], ids=["renumbered field", "renamed enum value"])
def test_a_breaking_change_is_caught(tmp_path: Path, old: str, new: str, finding: str) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", copy / "protos", ignore=shutil.ignore_patterns("releases"))
    shutil.copytree(ROOT / "third_party", copy / "third_party")
    shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    proto = copy / "protos" / "batchd" / "v1" / "batch.proto"
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new))
    result = buf("breaking", "protos", "--against", str(RELEASES[-1]), cwd=copy)
    assert result.returncode != 0 and finding in result.stdout, result.stdout + result.stderr


def test_generated_code_has_a_package_in_go_java_and_csharp() -> None:
    options = batch_pb2.DESCRIPTOR.GetOptions()
    assert options.go_package.endswith(";batchdv1")
    assert options.java_package == "dev.batchd.v1" and options.java_multiple_files
    assert options.csharp_namespace == "Batchd.V1"
