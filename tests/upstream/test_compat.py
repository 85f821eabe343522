"""The compatibility check on first use of upstream, and the one seam: nothing else imports upstream."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
from pathlib import Path

import pytest

from instanseg_scnp.upstream import UpstreamError, _compat
from instanseg_scnp.upstream._compat import REQUIRED, upstream

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*(ROOT / "instanseg_scnp").rglob("*.py"), *(ROOT / "napari_plugin" / "src").rglob("*.py")]


@pytest.fixture
def fresh_check():
    """Run the check anew (it is cached per process); the next user checks the real upstream again."""
    upstream.cache_clear()
    yield
    upstream.cache_clear()


def test_every_required_name_is_found_with_our_parameters():
    names = upstream()
    for module, wanted in REQUIRED.items():
        for dotted, parameters in wanted.items():
            obj = importlib.import_module(module)
            for part in dotted.split("."):
                obj = getattr(obj, part)
            try:
                signature = inspect.signature(obj)
            except (TypeError, ValueError):
                continue
            assert set(parameters) <= set(signature.parameters), dotted
    assert names.InstanSegLoss.__module__ == "instanseg.utils.loss.instanseg_loss"
    assert names.InstanSeg.__module__ == "instanseg.inference_class"
    assert names.version == importlib.metadata.version("instanseg-torch")


@pytest.mark.parametrize("version", ["0.1.1", "0.2.0", "1.0"])
def test_an_unsupported_release_is_named(monkeypatch, fresh_check, version):
    monkeypatch.setattr(_compat.importlib.metadata, "version", lambda name: version)
    with pytest.raises(UpstreamError, match=rf"instanseg-torch {version} is installed; instanseg-scnp supports "
                                            r">=0\.1\.2,<0\.2\.0"):
        upstream()


def test_a_missing_name_or_parameter_is_named_with_the_version(monkeypatch, fresh_check):
    changed = {**REQUIRED, "instanseg.utils.utils": {"percentile_normalize": ("img", "gamma"), "no_such_thing": ()}}
    monkeypatch.setattr(_compat, "REQUIRED", changed)
    with pytest.raises(UpstreamError, match=r"instanseg-torch 0\.1\.\d+ is not compatible with instanseg-scnp: "
                                            r"instanseg\.utils\.utils\.percentile_normalize takes no gamma; "
                                            r"instanseg\.utils\.utils\.no_such_thing is missing"):
        upstream()


def test_upstream_not_installed_says_how_to_install(monkeypatch, fresh_check):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_compat.importlib.metadata, "version", missing)
    with pytest.raises(UpstreamError, match=r"not installed: pip install 'instanseg-torch>=0\.1\.2,<0\.2\.0'"):
        upstream()


def _imports(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    return modules


def test_only_the_seam_imports_upstream():
    importing = {path.relative_to(ROOT).as_posix() for path in SOURCES
                 if any(name == "instanseg" or name.startswith("instanseg.") for name in _imports(path))}
    assert importing <= {"instanseg_scnp/upstream/_compat.py"}  # which imports the modules REQUIRED names
    assert all(module.split(".")[0] == "instanseg" for module in REQUIRED)


def test_the_plugin_imports_only_public_names():
    for path in (ROOT / "napari_plugin" / "src").rglob("*.py"):
        for module in _imports(path):
            if module.startswith("instanseg_scnp"):
                assert not any(part.startswith("_") for part in module.split(".")), (path.name, module)


def test_upstream_private_names_appear_only_in_the_compatibility_table():
    private = {name for wanted in REQUIRED.values() for dotted in wanted for name in dotted.split(".")
               if name.startswith("_")}
    assert private  # the table lists them
    for path in SOURCES:
        if path.name != "_compat.py":
            text = path.read_text()
            assert not [name for name in private if name in text], path
