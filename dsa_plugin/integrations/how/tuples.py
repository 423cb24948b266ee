"""The night tuples in HOW's training: the ``TuplesDataset`` stand-in and the per-run DSA report.

HOW's ``initialize_training`` calls ``TuplesDataset(**training['dataset'], transform=...)``;
:class:`NightTuplesFactory` takes that call and builds the night tuple loader (as cirtorch's
``TuplesDataset`` subclass of :mod:`dsa_plugin.integrations.cirtorch.tuples`). :class:`EpochReporter`
keeps ``<exp>/dsa_stats.json`` current (tuples, night anchors, mining statistics per epoch).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dsa_plugin.core.config import ConfigError, DSAConfig
from dsa_plugin.core.files import to_plain, write_json
from dsa_plugin.integrations.how.transforms import plain_transform

#: name of the per-run DSA report written next to HOW's ``train.log``
STATS_FILE = "dsa_stats.json"


class NightTuplesFactory:
    """Callable in place of cirtorch's ``TuplesDataset`` in HOW's ``initialize_training``.

    It takes the TuplesDataset arguments HOW passes (``name, mode, imsize, nnum, qsize, poolsize,
    transform``) and builds a :class:`NightTuplesDataset` with the DSA settings.
    """

    def __init__(self, config: DSAConfig, mean_std, data_root: str | os.PathLike | None = None,
                 exp_path: str | os.PathLike | None = None, logger_name: str = "HOW", seed: int = 0,
                 num_workers: int = 0):
        self.config = config
        self.num_workers = num_workers
        from dsa_plugin.transforms import check_mean_std

        self.mean_std = [list(v) for v in check_mean_std(mean_std, "HOW's mean_std")]
        self.data_root = None if data_root is None else str(data_root)
        self.exp_path = None if exp_path is None else str(exp_path)
        self.logger_name = logger_name
        self.seed = seed
        self.datasets: list = []

    def __call__(self, name, mode, imsize=None, nnum=5, qsize=2000, poolsize=20000, transform=None, **kwargs):
        from dsa_plugin.integrations.cirtorch.tuples import NightTuplesDataset

        dataset = NightTuplesDataset(
            name, mode, imsize=imsize, nnum=nnum, qsize=qsize, poolsize=poolsize,
            transform=plain_transform(transform), config=self.config, mean_std=self.mean_std,
            seed=self.seed, data_root=self.data_root, num_workers=self.num_workers,
            # HOW's forward_global squeezes the batch dimension: one image per forward, as HOW mines.
            batch_size=1, **kwargs,
        )
        dataset.create_epoch_tuples = EpochReporter(dataset, self.exp_path, self.logger_name)
        self.datasets.append(dataset)
        return dataset


class EpochReporter:
    """Wraps ``create_epoch_tuples`` to log the DSA statistics and keep ``dsa_stats.json`` current.

    A plain class (not a closure) so that the dataset stays picklable for DataLoader workers.
    """

    def __init__(self, dataset, exp_path: str | None, logger_name: str):
        self.create = dataset.create_epoch_tuples
        self.dataset = dataset
        self.exp_path = exp_path
        self.logger_name = logger_name
        self.epochs: list[dict[str, Any]] = []

    def __call__(self, net, device=None):
        if self.epochs:
            # What was served during the previous epoch is known only now (HOW has no epoch-end hook).
            self.epochs[-1]["night_images_served"] = night_images_served(self.dataset)
        result = self.create(net, device=device)
        # "epoch" is HOW's (1-based); the dataset's own 0-based counter stays as "dataset_epoch".
        stats = dataset_stats(self.dataset)
        stats["dataset_epoch"] = stats.pop("epoch", None)
        entry = {"epoch": len(self.epochs) + 1, "avg_neg_dist": to_plain(result), **stats}
        self.epochs.append(entry)
        logging.getLogger(self.logger_name).info(
            "DSA: %d tuples, %d night anchors, diverse anchors %s",
            len(self.dataset.qidxs or []), entry["night_anchors"], "on" if entry["diverse_anchors"] else "off",
        )
        self.write()
        return result

    def finish(self) -> None:
        if self.epochs:
            self.epochs[-1]["night_images_served"] = night_images_served(self.dataset)
        self.write()

    def write(self) -> None:
        if self.exp_path is None:
            return
        report = {"config": self.dataset.config.to_dict(), "epochs": self.epochs}
        write_json(Path(self.exp_path) / STATS_FILE, report, newline=False)


def night_images_served(dataset) -> int:
    """Night anchors ``__getitem__`` returned in this process (0 with DataLoader workers)."""
    return int(dataset.night_served)


def dataset_stats(dataset) -> dict[str, Any]:
    """This epoch's mining statistics plus the tuples, for ``dsa_stats.json``."""
    stats = {k: to_plain(v) for k, v in dict(dataset.stats or {}).items()}
    stats["night_anchors"] = len(dataset.night_anchor_indices)
    stats["night_anchor_indices"] = [int(i) for i in dataset.night_anchor_indices]
    stats["diverse_anchors"] = bool(dataset.sampler.needs_descriptors)
    stats["qidxs"] = [int(i) for i in (dataset.qidxs or [])]
    stats["pidxs"] = [int(i) for i in (dataset.pidxs or [])]
    stats["nidxs"] = [[int(j) for j in row] for row in (dataset.nidxs or [])]
    return stats


def check_device(config: DSAConfig, how_device) -> None:
    """``dsa.device`` must be HOW's training device: mining runs HOW's network there (and would
    leave it there), while HOW feeds its training batches to ``demo_train.gpu_id``."""
    import torch

    if config.device is None or how_device is None:
        return
    ours, hows = torch.device(config.device), torch.device(how_device)
    if ours.type == "cuda" and ours.index is None:
        ours = torch.device("cuda", 0)
    if ours != hows:
        raise ConfigError(f"dsa.device is {config.device!r} but HOW trains on {hows} (demo_train.gpu_id); "
                          f"set dsa.device to null (HOW's device) or to {str(hows)!r}")
