"""The npe2 manifest: valid, importable, and what it contributes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import npe2


def test_npe2_validate_passes():
    npe2_cli = shutil.which("npe2", path=str(Path(sys.executable).parent)) or shutil.which("npe2")
    result = subprocess.run([npe2_cli, "validate", "napari-instanseg-scnp", "--imports"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_contributes_the_widget_reader_and_samples():
    manifest = npe2.PluginManifest.from_distribution("napari-instanseg-scnp")
    assert [w.display_name for w in manifest.contributions.widgets] == ["SCNP inspector"]
    assert manifest.contributions.readers[0].filename_patterns == ["*.tif", "*.tiff"]
    samples = {s.key for s in manifest.contributions.sample_data}
    assert samples == {"immunohistochemistry", "synthetic", "synthetic_with_model"}
