"""Shared fixtures: a tiny trained model (once per session), synthetic cells, captured notifications.

Also the display check: the viewer tests (every test that needs a ``QApplication``, through
``qapp``, ``qtbot`` or ``make_napari_viewer``) run only where Qt can open a window, on the
virtual X display pytest-xvfb starts when ``Xvfb`` is on the PATH, or on ``$DISPLAY``. Where it
cannot (no X server, no Xvfb, Qt's X11 libraries missing), they are skipped with one line saying
what to install, and ``QT_QPA_PLATFORM=offscreen`` keeps Qt from aborting the process; the tests
that need no window still run. ``INSTANSEG_SCNP_REQUIRE_DISPLAY=1`` (set by ``.ci/run``) turns
the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REQUIRE_DISPLAY = "INSTANSEG_SCNP_REQUIRE_DISPLAY"
# Fixtures that create (or need) the QApplication, and so a display.
QT_FIXTURES = frozenset({"qapp", "qtbot", "make_napari_viewer"})
# Start Qt the way the viewer tests do, in a child process: where Qt cannot, it aborts the child, not pytest.
QT_PROBE = "from qtpy.QtWidgets import QApplication; app = QApplication(['probe']); print(app.platformName())"
CI_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "run"

_no_display: str | None = None  # why Qt cannot open a window here; None when it can


def _debian_packages() -> str:
    """The Debian packages ``.ci/run`` installs for Xvfb and Qt's X11 platform (the one list of them)."""
    try:
        found = re.search(r"APT_PACKAGES=\((.*?)\)", CI_SCRIPT.read_text(), re.S)
    except OSError:
        found = None
    return " ".join(found.group(1).split()) if found else "xvfb (and Qt's xcb libraries)"


def _why_no_display() -> str | None:
    """None if Qt can start a QApplication with this environment, else a short reason."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") \
            and not os.environ.get("QT_QPA_PLATFORM"):
        if shutil.which("Xvfb") is None:
            return "no X display (DISPLAY is unset and Xvfb is not on the PATH)"
        return "no X display (DISPLAY is unset and pytest-xvfb did not start Xvfb: --no-xvfb, or not installed)"
    try:
        probe = subprocess.run([sys.executable, "-c", QT_PROBE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "Qt did not start within 120 s"
    if probe.returncode == 0:
        return None
    lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
    said = next((line for line in lines if line.startswith("qt.qpa")), lines[-1] if lines else "")
    return f"Qt cannot open a window on DISPLAY={os.environ.get('DISPLAY', '')!r} ({said[:160]})"


def _skip_reason() -> str:
    return (f"{_no_display}: viewer tests skipped. Install Xvfb and Qt's X11 libraries "
            f"(Debian/Ubuntu: apt-get install {_debian_packages()}) or run under `xvfb-run -a`")


@pytest.hookimpl(trylast=True)  # after pytest-xvfb has started Xvfb and set DISPLAY, where it could
def pytest_configure(config):
    global _no_display
    _no_display = _why_no_display()
    if _no_display is not None:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # nothing that starts Qt by accident aborts the run


def pytest_report_header(config):
    if _no_display is not None:
        return [f"display: none, {_skip_reason()}"]
    return [f"display: {os.environ.get('DISPLAY') or os.environ.get('QT_QPA_PLATFORM')}"]


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up
def pytest_runtest_setup(item):
    if _no_display is None or not QT_FIXTURES.intersection(item.fixturenames):
        return
    if os.environ.get(REQUIRE_DISPLAY) == "1":
        pytest.fail(f"{REQUIRE_DISPLAY}=1 and {_skip_reason()}", pytrace=False)
    pytest.skip(_skip_reason())


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A run directory with a real exported model, trained for seconds on the built-in synthetic cells (its
    architecture given in full, upstream's 5-wide pixel classifier included, so that it does not change with
    the demo recipe)."""
    import instanseg_scnp

    out = tmp_path_factory.mktemp("models") / "tiny"
    instanseg_scnp.train(out=out, epochs=2, hotstart=1, epoch_length=8, tile_size=64, layers=(8, 16),
                         mlp_width=5, window_size=32, device="cpu")
    return out


@pytest.fixture(scope="session")
def cells():
    """A 256 x 256 synthetic fluorescence image (H, W) and its labels."""
    from instanseg_scnp.data import synthetic_image

    sample = synthetic_image((256, 256), modality="fluorescence", rng=3)
    return sample.image[..., 0], sample.labels.astype(np.int32)


@pytest.fixture(scope="session")
def seed_threshold(run_dir, cells):
    """A seed threshold at which the (barely trained) model finds a handful of seeds on ``cells``."""
    from instanseg_scnp import load_model, model_outputs

    seed_logits = model_outputs(load_model(run_dir), cells[0]).seed_logits
    return float(np.quantile(seed_logits, 0.9995)) / 15 + 0.5


@pytest.fixture
def notifications():
    """The notifications napari shows while the test runs (message, severity)."""
    from napari.utils.notifications import notification_manager

    records = []

    def record(notification):
        records.append((str(notification.message), str(notification.severity)))

    notification_manager.notification_ready.connect(record)
    yield records
    notification_manager.notification_ready.disconnect(record)
