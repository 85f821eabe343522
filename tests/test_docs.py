"""The documentation keeps working: docs/*.md examples run, examples use public names only, links resolve.

The README's own examples run in ``test_readme.py`` (one namespace, in order, as a
new user would paste them); here each page of ``docs/`` runs in its own namespace,
and each page with Python examples has a check of what its examples claim.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import instanseg_scnp
import instanseg_scnp.data
import instanseg_scnp.metrics

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS, ROOT / "napari_plugin" / "README.md", ROOT / "notebooks" / "README.md"]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PUBLIC_MODULES = {"instanseg_scnp": instanseg_scnp, "instanseg_scnp.data": instanseg_scnp.data,
                  "instanseg_scnp.metrics": instanseg_scnp.metrics}


def python_blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


def check_operator(ns: dict) -> None:
    assert ns["pulled_down"].all() and ns["pushed_up"].all()  # z~ <= z on foreground, >= z on background
    assert ns["same"] and ns["identity"]
    assert (ns["worst"] >= ns["logits"]).all()
    assert not torch.equal(ns["z_tilde"], ns["logits"])  # window 5 on random logits changes something


def check_losses(ns: dict) -> None:
    assert torch.isfinite(ns["loss"]) and ns["loss"].item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ns["model"].parameters())
    assert (ns["loss_fn"].scnp_seed_loss_name, ns["loss_fn"].scnp_mask_loss_name) == (
        "scnp_l1_distance", "scnp_lovasz_hinge")
    assert ns["name"] == "scnp-w5-plain+penalized0.5_l1_distance"
    assert ns["base"] == "lovasz_hinge" and ns["term"].window == (3, 5)
    assert ns["plain"] == ("dice_loss", None)


def check_metrics(ns: dict) -> None:
    assert ns["perfect"] == 1.0
    assert 0 < ns["scores"]["mean_f1"] < 1 and 0 < ns["upstream"] < 1  # a 2-pixel shift loses the strict IoUs
    assert ns["errors"]["beta0_gt"] > 0
    assert set(ns["table"]["label"]) == set(np.unique(ns["pred"])) - {0}
    assert (ns["pairs"]["roundness_error"].dropna() >= 0).all()


def check_datasets(ns: dict) -> None:
    assert ns["image"].shape == (128, 128, 3) and ns["labels"].shape == (128, 128) and ns["labels"].max() > 0
    assert np.array_equal(ns["again"].image, ns["image"]) and np.array_equal(ns["again"].labels, ns["labels"])
    assert {split: len(items) for split, items in ns["dataset"].items()} == {"Train": 2, "Validation": 1, "Test": 1}
    assert ns["item"]["image"].shape[:2] == ns["item"]["nucleus_masks"].shape[-2:] == (64, 64)


CHECKS: dict[str, Callable[[dict], None]] = {
    "operator.md": check_operator,
    "losses.md": check_losses,
    "metrics.md": check_metrics,
    "datasets.md": check_datasets,
}


def test_every_page_with_examples_has_a_check():
    with_examples = {page.name for page in DOCS if python_blocks(page)}
    assert with_examples == set(CHECKS), "add a check to CHECKS for each docs page with ```python examples"


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")  # upstream's autocast on a CPU machine
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_docs_python_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = ROOT / "docs" / name
    namespace: dict = {}
    for block in python_blocks(page):
        exec(compile(block, str(page), "exec"), namespace)
    CHECKS[name](namespace)


def _private_uses(code: str) -> list[str]:
    """Names of this package an example reaches that are not public (``__all__`` of the public modules)."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("instanseg_scnp") and a.name not in PUBLIC_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("instanseg_scnp"):
            module = PUBLIC_MODULES.get(node.module)
            if module is None:
                found.append(node.module)
                continue
            public = set(module.__all__) | ({"data", "metrics"} if node.module == "instanseg_scnp" else set())
            found += [f"{node.module}.{a.name}" for a in node.names if a.name not in public]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "instanseg_scnp":
            if node.attr not in set(instanseg_scnp.__all__) | {"data", "metrics", "__version__"}:
                found.append(f"instanseg_scnp.{node.attr}")
    return found


def test_private_uses_are_found():
    assert _private_uses("import instanseg_scnp.losses\nfrom instanseg_scnp._upstream import quiet_upstream\n"
                         "from instanseg_scnp.metrics import _labels\nimport instanseg_scnp\n"
                         "instanseg_scnp.export.export_run") == [
        "instanseg_scnp.losses", "instanseg_scnp._upstream", "instanseg_scnp.metrics._labels",
        "instanseg_scnp.export"]
    assert _private_uses("import instanseg_scnp\nfrom instanseg_scnp.data import synthetic_image\n"
                         "instanseg_scnp.make_loss()") == []


@pytest.mark.parametrize("page", [p for p in PAGES if p.is_file()], ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_use_public_names_only(page):
    private = [use for block in python_blocks(page) for use in _private_uses(block)]
    assert not private, f"{page.name} examples use non-public names: {private}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", [p for p in PAGES if p.is_file()], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that do not resolve: {broken}"
