r"""Upstream InstanSeg's loss, batched: the same value and gradient without a Python loop per image.

Upstream's ``InstanSeg.forward`` (``instanseg/utils/loss/instanseg_loss.py``)
loops over the images of a batch: per image a one-hot of the labels, a distance
transform, a peak search with a host sync, a pixel-classifier call and one
Lovász sort per crop. :func:`batched_loss_class` subclasses upstream's loss class
and overrides only ``forward`` with the same loss computed for the whole batch at
once: peaks of all images in one max-pool, the labels relabelled once, the
per-instance maxima of the distance target by ``scatter_reduce``, one
pixel-classifier call for the crops of all images, and the Lovász hinge of every
crop from one sort (:func:`lovasz_hinge_per_crop`). Seed losses share their
formula with the per-image hook (:func:`~instanseg_scnp.upstream.hook._seed_loss_map`).

Upstream's rules are kept, quirks included (:class:`BatchedForward`); the one
difference is *which* random subset is drawn for an image with more than
``num_instance_cap`` (50) instances: the same rule, a uniform subset of that
size, but drawn before the peak search instead of interleaved with it, so the
loss equals upstream's (to float rounding, with ``torch`` seeded alike) whenever
no image has more than 50 instances. Images with more than 50 *peaks* draw
exactly upstream's subsets.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
import torch.nn.functional as F

from instanseg_scnp._options import SEED_LOSSES
from instanseg_scnp.upstream._compat import upstream
from instanseg_scnp.upstream.hook import (
    _masked_mean,
    _penalized_crops,
    _scaled_distance,
    _seed_loss_map,
    install,
)
from instanseg_scnp.upstream.names import SCNPTerm, parse_loss_name

__all__ = ["BatchedForward", "batched_loss_class", "find_peaks", "instance_normalized_edt", "lovasz_hinge_per_crop"]

logger = logging.getLogger(__name__)

PEAK_NEIGHBOURHOOD = 3
"""Upstream's forward finds seeds with ``torch_peak_local_max(..., neighbourhood_size=3, ...)``: a 7 x 7 window."""
PEAK_THRESHOLD = 0.5
"""... and ``minimum_value=0.5`` on the sigmoid of the seed channel."""
COORDINATE_SCALE = 8
"""Upstream's embedding: ``(sigmoid(prediction) - 0.5) * 8 + coordinates``."""


def lovasz_hinge_per_crop(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""The binary Lovász hinge of each of N crops, all sorted at once.

    Parameters
    ----------
    logits : (N, ...) torch.Tensor
        Logits of N crops (any shape after N).
    labels : (N, ...) torch.Tensor
        Binary ground truth of the same shape (0/1, bool or float).

    Returns
    -------
    (N,) torch.Tensor
        The loss of each crop; their mean is upstream's ``lovasz_hinge(logits, labels, per_image=True)``.

    Notes
    -----
    For one crop of :math:`n` pixels with logits :math:`z`, labels :math:`y \in \{0, 1\}`
    and hinge errors :math:`e_i = 1 - z_i (2 y_i - 1)`, sorted so that
    :math:`e_{(1)} \ge \dots \ge e_{(n)}`, with :math:`G = \sum_i y_i`:

    .. math::

        \mathcal{L} = \sum_{k=1}^{n} \max(e_{(k)}, 0)\, (J_k - J_{k-1}), \qquad
        J_k = 1 - \frac{G - \sum_{j \le k} y_{(j)}}{G + \sum_{j \le k} (1 - y_{(j)})}, \qquad J_0 = 0,

    the Lovász extension of the Jaccard loss evaluated at the hinge errors
    (:math:`J_k` is the Jaccard loss of getting the :math:`k` worst pixels wrong).
    All crops have the same length, so one ``torch.sort`` along the pixel axis and
    two ``cumsum`` give every crop's :math:`J`. The gradient flows through the
    sorted errors only, as in the reference implementation; where errors tie
    across classes the subgradient depends on the sort's order, as there.

    References
    ----------
    .. [1] M. Berman, A. Rannen Triki and M. B. Blaschko, "The Lovász-Softmax loss: a
       tractable surrogate for the optimization of the intersection-over-union
       measure in neural networks", CVPR 2018 (Algorithm 1).

    Examples
    --------
    >>> logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, 1.0]])
    >>> labels = torch.tensor([[1, 0, 0], [0, 0, 0]])
    >>> lovasz_hinge_per_crop(logits, labels)
    tensor([0.7500, 2.0000])
    """
    if logits.shape != labels.shape or logits.ndim < 1:
        raise ValueError(f"expected logits and labels of one shape (N, ...), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    logits = logits.flatten(1)
    labels = labels.flatten(1).to(logits.dtype)
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    labels_sorted = labels.gather(1, order)
    positives = labels.sum(1, keepdim=True)
    intersection = positives - labels_sorted.cumsum(1)
    union = positives + (1.0 - labels_sorted).cumsum(1)
    jaccard = 1.0 - intersection / union
    weights = torch.diff(jaccard, dim=1, prepend=torch.zeros_like(jaccard[:, :1]))
    return (F.relu(errors_sorted) * weights).sum(1)


def find_peaks(values: torch.Tensor, neighbourhood: int = PEAK_NEIGHBOURHOOD,
               threshold: float = PEAK_THRESHOLD) -> torch.Tensor:
    """The seeds of (B, H, W) ``values``: ``(b, y, x)`` rows in row-major order, (M, 3) int64.

    Upstream's ``torch_peak_local_max`` rule, for a batch in one max-pool: a pixel is
    a peak where it is the first maximum (in the pool's scan order) of its
    ``2 * neighbourhood + 1`` square window and that maximum is above ``threshold``.
    """
    batch, height, width = values.shape
    size = 2 * neighbourhood + 1
    pooled, argmax = F.max_pool2d(values[:, None], size, stride=1, padding=neighbourhood, return_indices=True)
    own = torch.arange(height * width, device=values.device).view(1, 1, height, width)
    return ((argmax == own) & (pooled > threshold))[:, 0].nonzero()


def _relabel(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-wide ids of (B, H, W) labels: 0 background, 1..K the instances sorted by (image, label).

    Returns the id map (B, H, W) and the image of each instance (K,).
    """
    labels = labels.long()
    stride = max(int(labels.max()), 0) + 1
    image = torch.arange(labels.shape[0], device=labels.device).view(-1, 1, 1)
    key = torch.where(labels > 0, image * stride + labels, 0)
    unique, inverse = torch.unique(torch.cat([key.new_zeros(1), key.flatten()]), return_inverse=True)
    return inverse[1:].view_as(labels), unique[1:] // stride


def instance_normalized_edt(labels: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Upstream's ``instance_wise_edt(..., edt_type="edt")`` of each (B, H, W) label image, as (B, H, W).

    The distance of each instance pixel to the nearest pixel of another label
    (``edt.edt(..., black_border=False)`` per image, as upstream), divided by its
    instance's maximum (one ``scatter_reduce`` for the batch, where upstream builds
    a one-hot per image); 0 on background. ``ids`` are batch-wide instance ids
    (:func:`_relabel`), computed here if not given.
    """
    import edt  # upstream's own EDT, a dependency of this package too

    if ids is None:
        ids, _ = _relabel(labels)
    images = labels.detach().to("cpu", torch.float32).numpy()  # upstream passes labels.float()
    distance = np.stack([edt.edt(image, black_border=False) for image in images]) if len(images) else images
    distance = torch.from_numpy(distance).to(ids.device)
    flat = ids.flatten()
    maxima = distance.new_zeros(int(flat.max()) + 1 if flat.numel() else 1)
    maxima = maxima.scatter_reduce(0, flat, distance.flatten(), reduce="amax")
    return torch.where(ids > 0, distance / maxima[ids], 0.0)


class BatchedForward:
    """``forward`` of :func:`batched_loss_class`: upstream's InstanSeg loss, batched.

    Upstream's rules, per image and per label channel (``cells_and_nuclei``: two),
    all kept:

    - ``w_inst`` is replaced by ``self.instance_weight``; ``w_seed`` is used.
    - An image whose labels are all < 0 (unannotated) contributes nothing.
    - Sparse labels (some -1): the seed loss is the mean over annotated pixels
      (SCNP: unannotated pixels are nobody's neighbour), and the -1 labels are
      set to 0 *in place in* ``instances``, as upstream does (a drop-in
      replacement must leave the same tensor behind; pass a copy to keep yours).
    - An image whose labels are all > 0 contributes nothing, not even its seed
      loss, unless ``instance_weight`` is 0 (then every annotated image adds its
      seed loss and nothing else).
    - No instance, or no seed above 0.5 on them: the seed loss only.
    - Seeds: peaks of the sigmoid of the first seed channel on the instances'
      pixels (:func:`find_peaks`); an image with more than ``num_instance_cap``
      instances first keeps a random subset of that many, and at most that many
      of its seeds are kept, by ``torch.randperm`` (called for every image that
      has instances, as upstream, so the global RNG advances alike).
    - The crop centres are detached; crops are clamped into their own image
      by upstream's ``centre_crop``.
    - The result is divided by the batch size (and by 2 with
      ``cells_and_nuclei``); if no image contributed, upstream returns the last
      image's embedding times 0, a (dim_coords, H, W) tensor, and so does this.

    Seed losses ``binary_xloss``, ``l1_distance``, ``l2_distance`` (plain or SCNP)
    and the mask loss ``lovasz_hinge`` (plain or SCNP) are computed for the whole
    batch; any other seed or mask loss is called per image on that image's
    slice, as upstream calls it.
    """

    def forward(self, prediction: torch.Tensor, instances: torch.Tensor, w_inst: float = 1.5,
                w_seed: float = 1.0) -> torch.Tensor:
        """The loss of (B, C, H, W) ``prediction`` against (B, 1 or 2, H, W) ``instances``: upstream's."""
        w_inst = self.instance_weight  # upstream's forward overwrites its argument
        if prediction.ndim != 4 or instances.ndim != 4 or instances.shape[0] != prediction.shape[0] \
                or instances.shape[-2:] != prediction.shape[-2:]:
            raise ValueError(f"expected prediction (B, C, H, W) and instances (B, 1 or 2, H, W) of one batch and "
                             f"size, got {tuple(prediction.shape)} and {tuple(instances.shape)}")
        batch, _, height, width = prediction.shape
        coordinates = upstream().generate_coordinate_map(mode="linear", spatial_dim=self.dim_coords, height=height,
                                                         width=width, device=prediction.device)
        dim_out = self.dim_out // 2 if self.cells_and_nuclei else self.dim_out
        total, embedding = None, None
        for channel in range(instances.shape[1]):
            channel_prediction = prediction[:, :dim_out] if channel == 0 else prediction[:, dim_out:]
            embedding = (torch.sigmoid(channel_prediction[:, : self.dim_coords]) - 0.5) * COORDINATE_SCALE \
                + coordinates
            sigma = channel_prediction[:, self.dim_coords : self.dim_coords + self.n_sigma]
            seed = channel_prediction[:, -self.dim_seeds :]
            part = self._channel_loss(embedding, sigma, seed, instances[:, channel], w_inst, w_seed)
            if part is not None:
                total = part if total is None else total + part
        if total is None:  # upstream: `loss` stayed the int 0
            return embedding[-1] * 0
        loss = total / batch
        return loss / 2 if self.cells_and_nuclei else loss

    def _channel_loss(self, embedding, sigma, seed, labels, w_inst, w_seed):
        """The summed contributions of one label channel's images, or None if there are none."""
        unannotated = labels < 0
        skip = unannotated.flatten(1).all(1)
        sparse = unannotated.flatten(1).any(1) & ~skip
        labels.masked_fill_(unannotated & sparse[:, None, None], 0)  # upstream's in-place write
        positive = labels > 0
        if w_inst == 0:
            seed_images = ~skip
            instance_images = torch.zeros_like(skip)
        else:
            seed_images = ~skip & ~positive.flatten(1).all(1)
            instance_images = seed_images & positive.flatten(1).any(1)
        flags = torch.stack([seed_images, instance_images, sparse]).cpu()
        seed_list = flags[0].nonzero()[:, 0].tolist()
        if not seed_list:
            return None
        ids, instance_image = _relabel(labels)
        sparse_list = flags[2][seed_list].tolist()
        keep = ~unannotated[seed_list][:, None] if any(sparse_list) else None
        total = w_seed * self._seed_losses(seed, labels, ids, positive, seed_list, keep, sparse_list).sum()
        instance_list = flags[1].nonzero()[:, 0].tolist()
        if instance_list:
            instance = self._instance_losses(embedding, sigma, seed, ids, instance_image, instance_list)
            if instance is not None:
                total = total + w_inst * instance.sum()
        return total

    def _seed_losses(self, seed, labels, ids, positive, images, keep, sparse):
        """Each listed image's seed loss, (len(images),); ``keep``: annotated pixels if any image is ``sparse``."""
        base, term = _spec(getattr(self, "scnp_seed_loss_name", None))
        if base not in SEED_LOSSES or self.dim_seeds != 1:  # e.g. distance_and_binary_loss: upstream's, per image
            return torch.stack([self.seed_loss(seed[b], labels[b][None], mask=keep[i] if sparse[i] else None)
                                for i, b in enumerate(images)])
        target = None
        if base != "binary_xloss":
            target = _scaled_distance(instance_normalized_edt(labels[images], ids[images]))[:, None]
        ignore = None if keep is None else ~keep
        per_pixel = _seed_loss_map(seed[images], positive[images][:, None], target, base=base, term=term,
                                   ignore=ignore, bg_weight=self.bg_weight)
        return _masked_mean(per_pixel, keep, dim=(1, 2, 3))

    def _instance_losses(self, embedding, sigma, seed, ids, instance_image, images):
        """The mask loss of each listed image that has seeds, (n,), or None if none has."""
        batch, height, width = ids.shape
        cap = self.num_instance_cap
        selected = torch.zeros(instance_image.numel() + 1, dtype=torch.bool)
        counts = torch.bincount(instance_image, minlength=batch).tolist()
        starts = np.cumsum([0, *counts]).tolist()
        for b in images:
            chosen = torch.randperm(counts[b])[:cap] if cap is not None and cap < counts[b] else slice(None)
            selected[1 + starts[b] : 1 + starts[b + 1]][chosen] = True
        on_selected = selected.to(ids.device)[ids]
        with torch.no_grad():
            peaks = find_peaks(torch.sigmoid(seed[:, 0]) * on_selected.to(seed.dtype))
        peak_counts = torch.bincount(peaks[:, 0], minlength=batch).tolist()
        starts = np.cumsum([0, *peak_counts]).tolist()
        chosen = [starts[b] + torch.randperm(peak_counts[b])[:cap] for b in images]  # upstream's draw, per image
        peaks = peaks[torch.cat(chosen).to(peaks.device)]
        if not len(peaks):
            return None
        image, row, column = peaks.unbind(1)
        window = min(self.window_size, height, width)
        mesh, _ = upstream().centre_crop(peaks[:, 1:], window, height, width)
        mesh = torch.stack([mesh[0] + (image * height).repeat_interleave(window * window), mesh[1]])
        features = self.feature_engineering(_stack_rows(embedding), embedding[image, :, row, column].detach(),
                                            _stack_rows(sigma), window // 2, mesh)
        logits = self.pixel_classifier(features).view(-1, 1, window, window)
        crops = (ids.view(-1, width)[mesh[0], mesh[1]].view(-1, window, window)
                 == ids[image, row, column][:, None, None]).float()
        crops_per_image = torch.bincount(image, minlength=batch)
        with_crops = [b for b in images if peak_counts[b]]
        base, term = _spec(getattr(self, "scnp_mask_loss_name", None))
        if base != "lovasz_hinge":  # upstream's own call, per image
            bounds = np.cumsum([0, *crops_per_image.tolist()]).tolist()
            return torch.stack([self.binary_loss_fn(logits[bounds[b] : bounds[b + 1]], crops[bounds[b] : bounds[b + 1]],
                                                    sigma=sigma[b, 0]) for b in with_crops])

        def mean_per_image(z):
            per_crop = lovasz_hinge_per_crop(z[:, 0], crops)
            sums = per_crop.new_zeros(batch).index_add(0, image, per_crop)
            return sums[with_crops] / crops_per_image[with_crops]

        if term is None:
            return mean_per_image(logits)
        return term.combine(lambda: mean_per_image(logits),
                            lambda: mean_per_image(_penalized_crops(logits, crops, term.window)))


def _spec(name: str | None) -> tuple[str | None, SCNPTerm | None]:
    """(base, SCNP term) of a loss name the hook recorded; (None, None) without one."""
    return (None, None) if name is None else parse_loss_name(name)


def _stack_rows(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) maps as one (C, B * H, W) image: image b's row y is row b * H + y."""
    return maps.transpose(0, 1).reshape(maps.shape[1], -1, maps.shape[-1])


@functools.cache
def batched_loss_class() -> type:
    """``BatchedInstanSegLoss``: upstream's loss class with :class:`BatchedForward`'s ``forward``.

    Built on first use (upstream is imported lazily), once; installs the SCNP
    hook, so the class takes the SCNP loss names. Construct it like upstream's
    ``InstanSeg`` loss, or through ``make_loss(..., batched=True)``. Upstream's own
    forward stays reachable as ``upstream().InstanSegLoss.forward(loss, ...)``.
    """
    install()
    base = upstream().InstanSegLoss
    return type("BatchedInstanSegLoss", (BatchedForward, base), {
        "__module__": __name__,
        "__qualname__": "BatchedInstanSegLoss",
        "__doc__": f"Upstream's InstanSeg loss ({base.__module__}.{base.__qualname__}), batched: "
                   "see :class:`instanseg_scnp.upstream.batched_loss.BatchedForward`.",
    })


def __getattr__(name: str) -> object:
    if name == "BatchedInstanSegLoss":  # so that pickle finds the class
        return batched_loss_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
