"""What pyproject.toml claims against what CI installs: every dependency floor is a version the suite
runs on (constraints/ci.txt, and .ci/run's torch pin), so no floor promises an untested release."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _floors() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floors = {}
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(text)
        (lowest,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        floors[requirement.name.lower()] = lowest
    return floors


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / "ci.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    torch = re.search(r"torch==(\S+)", (ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert torch, ".ci/run no longer pins torch"
    pins["torch"] = torch.group(1)
    return pins


def test_every_floor_is_the_version_ci_installs():
    from packaging.version import Version

    floors, pins = _floors(), _pins()
    assert {"torch", "transformers", "trl", "peft", "accelerate", "datasets"} <= set(floors)
    wrong = {name: (floor, pins.get(name)) for name, floor in floors.items()
             if name not in pins or Version(floor) != Version(pins[name])}
    assert not wrong, (
        f"pyproject.toml floor vs CI's pin {wrong}: a floor below the pin claims an untested version; "
        "set each floor to the version constraints/ci.txt installs (or test the lower one in CI)"
    )
