"""Epoch mining of the tuple loader: anchors (random or diverse), their descriptors, hard negatives.

:class:`EpochMining` is the half of :class:`~dsa_plugin.training.tuples.NightTuplesDataset` that
runs once per epoch (cirtorch's ``create_epoch_tuples``): descriptors are extracted with the
network in eval mode, in batches of equal-size images, with the anchors the md5 rule selects
turned into synthetic night first; all sampling uses a private ``torch.Generator`` seeded with
``seed + epoch``. With diverse anchors the anchor pool's descriptors are reused for negative
mining (the chosen anchors' columns, and the day images that are in the negative pool too).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 3)
    >>> net_device(net)
    device(type='cpu')
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dsa_plugin.core.batching import batches_by_size
from dsa_plugin.core.descriptors import as_columns, declared_dim
from dsa_plugin.core.images import ImageList
from dsa_plugin.mining import hard_negatives
from dsa_plugin.training.labels import ANCHOR, ANCHOR_MINE, ANCHOR_POOL_MINE, NEGATIVE_POOL_MINE

__all__ = ["EpochMining", "net_device"]


def net_device(net: torch.nn.Module) -> torch.device:
    """The device of ``net``'s first parameter (or buffer); CPU for a net without either.

    Example:
        >>> import torch
        >>> net_device(torch.nn.Linear(2, 3)), net_device(torch.nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    for p in net.parameters():
        return p.device
    for b in net.buffers():
        return b.device
    return torch.device("cpu")


class EpochMining:
    """``create_epoch_tuples`` and descriptor extraction, for :class:`~dsa_plugin.training.tuples.NightTuplesDataset`.

    Uses the dataset's ``images``, ``clusters``, ``qpool``/``ppool``, ``sampler``, ``config`` and
    its image helpers (``_is_night``, ``_night``, ``_finish``, ``_custom``, ``_plain``).
    """

    def _device(self, net: torch.nn.Module, device) -> torch.device:
        if device is None:
            device = self.config.device
        if device is None:
            return net_device(net)
        device = torch.device(device)
        if net_device(net) != device:
            net.to(device)  # cirtorch's create_epoch_tuples moves the net with .cuda() too
        return device

    def _night_images(self, loader, indices: list[int], label: str, device, state: dict[str, int]):
        """``(position, image)`` of ``loader``'s images, night where the rule selects them."""
        bar = tqdm(loader, total=len(indices), desc=f"extract {label}", disable=not self.progress, leave=False)
        for pos, x01 in bar:
            index = indices[pos]
            if self._is_night(index, label):
                x01 = self._night(index, x01, device)
                state["night"] += 1
            yield pos, (x01 if self._plain else self._custom(x01))

    def extract(self, indices: Sequence[int], label: str, net: torch.nn.Module, device=None,
                batch_size: int | None = None) -> Tensor:
        """Descriptors (D x N columns, cirtorch's layout) of ``images[indices]`` with ``net`` in eval
        mode; images whose (name, ``label``) the night rule selects are translated first.

        Equal-size images are batched (``batch_size``; sizes differ in general, so images wait in
        per-size buckets, at most ``4 * batch_size`` in all).
        """
        device = self._device(net, device)
        batch_size = batch_size or self.batch_size
        dim = declared_dim(net)
        indices = [int(i) for i in indices]
        vecs: Tensor | None = None if dim is None else torch.zeros(dim, len(indices), device=device)
        state = {"night": 0, "batches": 0}
        was_training = net.training
        net.eval()
        try:
            loader = DataLoader(ImageList([self.images[i] for i in indices], self.imsize, loader=self.loader),
                                batch_size=None, shuffle=False, num_workers=self.num_workers)
            images = self._night_images(loader, indices, label, device, state)
            with torch.no_grad():
                for positions, group in batches_by_size(images, batch_size, max_buffered=4 * batch_size):
                    for pos, xb in self._unambiguous_parts(positions, torch.stack(group).to(device), dim):
                        cols = self._forward(net, self._finish(xb) if self._plain else xb, dim)
                        if vecs is None:
                            dim = cols.shape[0]
                            vecs = torch.zeros(dim, len(indices), device=device)
                        vecs[:, pos] = cols.to(device=device, dtype=vecs.dtype)
                        state["batches"] += 1
        finally:
            net.train(was_training)
        self._last_extract = state
        return vecs if vecs is not None else torch.zeros(0, 0, device=device)

    @staticmethod
    def _unambiguous_parts(positions: list[int], x: Tensor, dim: int | None) -> list[tuple[list[int], Tensor]]:
        """B == D would make the output orientation ambiguous: split such a batch in two."""
        if dim is None or len(positions) != dim:
            return [(positions, x)]
        return [(positions[:-1], x[:-1]), (positions[-1:], x[-1:])]

    def _forward(self, net: torch.nn.Module, x: Tensor, dim: int | None) -> Tensor:
        """D x B descriptors of a batch; a net that is not batch-safe gets one image at a time.

        Some nets only work at batch 1 (HOW's global descriptor adds a 1 x D buffer and normalises
        attention over the whole batch), so the first batch a net sees is checked against
        single-image forwards and batching is turned off for that net if they differ.
        """
        key = id(net)
        if x.shape[0] == 1 or self._batch_safe.get(key) is False:
            return torch.cat([as_columns(net(x[i : i + 1]), 1, dim) for i in range(x.shape[0])], dim=1)
        if key in self._batch_safe:
            return as_columns(net(x), x.shape[0], dim)
        singles = torch.cat([as_columns(net(x[i : i + 1]), 1, dim) for i in range(x.shape[0])], dim=1)
        try:
            batched = as_columns(net(x), x.shape[0], dim)
            safe = batched.shape == singles.shape and torch.allclose(batched, singles, rtol=1e-3, atol=1e-4)
        except RuntimeError:
            safe = False
        self._batch_safe[key] = safe
        if not safe:
            warnings.warn(f"{type(net).__name__} gives different descriptors for a batch than one image at a time; "
                          "extracting one image at a time", stacklevel=4)
        return singles

    def _negative_pool_vecs(self, idxs2images: list[int], day_vecs: dict[int, int], day_matrix: Tensor | None,
                            net: torch.nn.Module, device) -> Tensor:
        """Descriptors of the negative pool; images already extracted as day this epoch are not extracted again."""
        reuse = [j for j, i in enumerate(idxs2images) if i in day_vecs] if day_matrix is not None else []
        self._last_reused = len(reuse)
        if not reuse:
            return self.extract(idxs2images, NEGATIVE_POOL_MINE, net, device)
        reused = set(reuse)
        todo = [j for j in range(len(idxs2images)) if j not in reused]
        poolvecs = torch.empty(day_matrix.shape[0], len(idxs2images), dtype=day_matrix.dtype, device=day_matrix.device)
        cols = torch.tensor([day_vecs[idxs2images[j]] for j in reuse], device=day_matrix.device)
        poolvecs[:, torch.tensor(reuse, device=day_matrix.device)] = day_matrix[:, cols]
        if todo:
            fresh = self.extract([idxs2images[j] for j in todo], NEGATIVE_POOL_MINE, net, device)
            poolvecs[:, torch.tensor(todo, device=day_matrix.device)] = fresh.to(poolvecs.device, poolvecs.dtype)
        return poolvecs

    def _epoch_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def _timed_extract(self, indices, label, net, device, stats, timings, key) -> Tensor:
        t0 = time.perf_counter()
        vecs = self.extract(indices, label, net, device)
        timings[key] = time.perf_counter() - t0
        stats["night_anchors_mining"] += self._last_extract["night"]
        stats["images_extracted"] += len(indices)
        return vecs

    def _diverse_anchors(self, net, device, gen, stats, timings) -> tuple[Tensor, Tensor | None, dict[int, int],
                                                                         Tensor | None]:
        """(chosen pair indices, their descriptors or None, day image -> pool column, pool descriptors or None)."""
        order = torch.randperm(len(self.qpool), generator=gen)[: self.qpool_size]
        pool_vecs = self._timed_extract([self.qpool[i] for i in order], ANCHOR_POOL_MINE, net, device, stats, timings,
                                        "extract_anchor_pool_s")
        t0 = time.perf_counter()
        picks = self.sampler(pool_vecs.t(), self.qsize, gen).cpu()
        timings["select_anchors_s"] = time.perf_counter() - t0
        stats.update({k: v for k, v in self.sampler.last_stats.items() if not isinstance(v, list)})
        stats["qpool_size"] = len(order)
        if not self.reuse_anchor_descriptors:
            return order[picks], None, {}, None
        # Pool images extracted as day are the negative pool's images too (same image, label never
        # night there, eval mode): their columns serve the negative pool.
        day_vecs: dict[int, int] = {}
        for col, i in enumerate(order.tolist()):
            image = self.qpool[i]
            if image not in day_vecs and not self._is_night(image, ANCHOR_POOL_MINE):
                day_vecs[image] = col
        return order[picks], pool_vecs[:, picks.to(pool_vecs.device)], day_vecs, pool_vecs

    def _hard_negatives(self, net, device, gen, qvecs, day_vecs, day_matrix, stats, timings) -> float:
        """Mine ``nnum`` negatives per anchor into ``nidxs``; returns the average anchor-negative distance."""
        idxs2images = torch.randperm(len(self.images), generator=gen)[: self.poolsize].tolist()
        stats["poolsize"] = len(idxs2images)
        if qvecs is None:
            qvecs = self._timed_extract(self.qidxs, ANCHOR_MINE, net, device, stats, timings, "extract_anchors_s")
        t0 = time.perf_counter()
        poolvecs = self._negative_pool_vecs(idxs2images, day_vecs, day_matrix, net, device)
        timings["extract_pool_s"] = time.perf_counter() - t0
        stats["images_extracted"] += len(idxs2images) - self._last_reused
        stats["descriptors_reused"] = self._last_reused
        t0 = time.perf_counter()
        found = hard_negatives(
            qvecs.t(), poolvecs.t(),
            [self.clusters[q] for q in self.qidxs], [self.clusters[i] for i in idxs2images], self.nnum,
        )
        timings["hard_negatives_s"] = time.perf_counter() - t0
        self.nidxs = [[idxs2images[j] for j in row] for row in found.indices.tolist()]
        return float(found.distances.mean())

    def create_epoch_tuples(self, net: torch.nn.Module, device: torch.device | str | None = None) -> float:
        """Pick this epoch's anchors, mine hard negatives, store ``qidxs``/``pidxs``/``nidxs``.

        Returns the average anchor-negative l2 distance (what cirtorch prints and HOW logs); 0 when
        ``nnum`` is 0.
        """
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        device = self._device(net, device)
        gen = self._epoch_generator()
        stats: dict[str, Any] = {"epoch": self.epoch, "seed": self.seed + self.epoch,
                                 "diverse": self.sampler.needs_descriptors, "anchors": self.qsize,
                                 "night_anchors_mining": 0, "images_extracted": 0}
        if self.sampler.needs_descriptors:
            chosen, qvecs, day_vecs, day_matrix = self._diverse_anchors(net, device, gen, stats, timings)
        else:
            chosen, qvecs, day_vecs, day_matrix = (
                torch.randperm(len(self.qpool), generator=gen)[: self.qsize],
                None,
                {},
                None,
            )
        chosen = chosen.tolist()
        self.qidxs = [self.qpool[i] for i in chosen]
        self.pidxs = [self.ppool[i] for i in chosen]
        self.night_anchor_indices = [q for q in self.qidxs if self._is_night(q, ANCHOR)]
        stats["night_anchors"] = len(self.night_anchor_indices)
        avg = 0.0
        if self.nnum == 0:
            self.nidxs = [[] for _ in self.qidxs]
        else:
            avg = self._hard_negatives(net, device, gen, qvecs, day_vecs, day_matrix, stats, timings)
        stats["average_negative_distance"] = avg
        timings["total_s"] = time.perf_counter() - t_start
        stats["timings"] = timings
        self.stats = stats
        self.epoch += 1
        if self.progress:
            print(
                f">>>> {type(self).__name__} {self.name}-{self.mode} epoch {stats['epoch']}: {len(self.qidxs)} tuples, "
                f"{stats['night_anchors']} night anchors, average negative l2-distance {avg:.2f} "
                f"({timings['total_s']:.1f} s)"
            )
        return avg
