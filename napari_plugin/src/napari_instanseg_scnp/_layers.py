"""The inspector's output layers: one layer per role, added once and then updated in place.

A role ("seed logits", "difference", "model A", ...) names what a layer holds;
its display name is short (``z~ w3``) and may change, the role does not. A hidden
image layer does not get new data while it is hidden (swapping 4 million pixels of
a layer nobody sees costs tens of milliseconds): the data waits and goes in when
the layer is shown.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import napari

__all__ = ["LayerManager"]

COLORBAR_POSITION = "bottom_right"


def _place(layer: napari.layers.Layer, properties: dict) -> None:
    """Give a reused layer the ``scale`` and ``translate`` of its new data (another image's, say)."""
    for key in ("scale", "translate"):
        if key in properties and tuple(getattr(layer, key)) != tuple(properties[key]):
            setattr(layer, key, properties[key])


class LayerManager:
    """Adds, updates and removes the layers of each role in ``viewer``."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self._layers: dict[str, napari.layers.Layer] = {}
        self._pending: dict[str, np.ndarray] = {}

    def __contains__(self, role: str) -> bool:
        return self.get(role) is not None

    def get(self, role: str) -> napari.layers.Layer | None:
        """The layer of ``role``, or None if it was never added or the user deleted it."""
        layer = self._layers.get(role)
        return layer if layer is not None and layer in self._viewer.layers else None

    def __getitem__(self, role: str) -> napari.layers.Layer:
        layer = self.get(role)
        if layer is None:
            raise KeyError(f"no layer for {role!r}; have {sorted(self.roles())}")
        return layer

    def roles(self) -> list[str]:
        return [role for role in self._layers if self.get(role) is not None]

    def data(self, role: str) -> np.ndarray:
        """The data of ``role``'s layer, including data waiting for a hidden layer."""
        return self._pending.get(role, self[role].data)

    def put_image(self, role: str, data: np.ndarray, *, name: str, colorbar: bool = False,
                  **properties) -> napari.layers.Image:
        """Add the image layer of ``role`` or update it (a hidden layer gets ``data`` when shown)."""
        layer = self.get(role)
        if layer is None:
            layer = self._viewer.add_image(data, name=name, **properties)
            layer.colorbar.visible = colorbar
            layer.colorbar.position = COLORBAR_POSITION
            layer.events.visible.connect(partial(self._apply_pending, role))
            self._layers[role] = layer
            self._pending.pop(role, None)
            return layer
        if layer.name != name:
            layer.name = name
        _place(layer, properties)
        limits = properties.get("contrast_limits")
        if limits is not None and tuple(layer.contrast_limits) != tuple(limits):
            layer.contrast_limits = limits
        if layer.visible:
            self._pending.pop(role, None)
            layer.data = data
        else:
            self._pending[role] = data
        return layer

    def _apply_pending(self, role: str, *_: object) -> None:
        layer = self.get(role)
        if layer is not None and layer.visible and role in self._pending:
            layer.data = self._pending.pop(role)

    def put_labels(self, role: str, data: np.ndarray, *, name: str, opacity: float = 0.6,
                   **properties) -> napari.layers.Labels:
        """Add the labels layer of ``role`` or replace its data."""
        layer = self.get(role)
        if layer is None:
            layer = self._viewer.add_labels(data, name=name, opacity=opacity, **properties)
            self._layers[role] = layer
            return layer
        layer.data = data
        if layer.name != name:
            layer.name = name
        _place(layer, properties)
        return layer

    def remove(self, *roles: str) -> None:
        for role in roles:
            layer = self.get(role)
            self._layers.pop(role, None)
            self._pending.pop(role, None)
            if layer is not None:
                self._viewer.layers.remove(layer)
