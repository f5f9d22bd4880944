"""The `picsearch` command line against the running stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.core.vectorstore import image_id
from tests.conftest import RunningStack
from tests.imagegen import write_distinct_set

pytestmark = pytest.mark.e2e
PICSEARCH = str(Path(sys.executable).parent / "picsearch")


def run(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(stack.env, PICSEARCH_API_URL=stack.api_url, COLUMNS="200")
    return subprocess.run(
        [PICSEARCH, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_load_wait_search_and_stats(stack: RunningStack) -> None:
    files = write_distinct_set(stack.images_root / "cli", 4, start=6000)
    job = as_json(run(stack, "load", str(files[0].parent), "--wait", "--json"))
    assert job["state"] == "succeeded" and job["indexed"] == 4
    result = as_json(run(stack, "search", str(files[1]), "-k", "2", "--json"))
    assert result["results"][0]["id"] == image_id(str(files[1].resolve()))
    assert len(result["results"]) == 2
    stats = as_json(run(stack, "stats", "--json"))
    assert stats["count"] >= 4 and stats["random_weights"] is True
    table = run(stack, "search", str(files[2]), "-k", "1")
    assert table.returncode == 0 and str(files[2].resolve()) in table.stdout


def test_load_wait_draws_the_progress_bar_and_prints_a_summary(stack: RunningStack) -> None:
    files = write_distinct_set(stack.images_root / "cli-bar", 3, start=6100)
    proc = run(stack, "load", str(files[0].parent), "--wait")
    assert proc.returncode == 0, proc.stderr
    assert "succeeded: 3 found, 3 indexed, 0 unchanged, 0 failed" in proc.stdout


def test_errors_exit_non_zero_with_the_message(stack: RunningStack) -> None:
    outside = run(stack, "load", "/etc")
    assert outside.returncode == 1
    assert "path_forbidden" in outside.stderr and "outside the image roots" in outside.stderr
    refused = run(stack, "drop")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    down = run(stack, "stats", "--api", "http://127.0.0.1:9")
    assert down.returncode == 2 and "cannot reach the service" in down.stderr
