"""The generated references (docs/reference/contract.md, configuration.md, errors.md, cli.md)
are what scripts/gen-docs writes from their sources today: a comment, a setting, a reason or a
flag changed without regenerating fails here, so the docs never drift from the code."""

from __future__ import annotations

import subprocess
import sys

from tests.support.doc_examples import ROOT


def test_the_generated_reference_pages_are_fresh():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-docs"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + "\nrun scripts/gen-docs and commit the pages"
