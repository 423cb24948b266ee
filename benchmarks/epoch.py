#!/usr/bin/env python
"""One cirtorch-style training epoch, three ways on the same data: what DSA costs inside an epoch.

An epoch is what cirtorch's ``train()`` does: ``create_epoch_tuples``
(anchor choice, descriptor extraction in eval mode, hard negatives), then every tuple through the
network in train mode, one image per forward pass, contrastive loss, backward, an optimizer step
every 5 tuples. Only the dataset differs between the rows:

(a) ``plain``: the toolkit's plain ``TuplesDataset`` behaviour, no DSA: cirtorch's own class when it
    is importable (``.cuda()`` calls made no-ops on CPU), else the plugin's ``NightTuplesDataset``
    with DSA off and one image per forward pass, which gives cirtorch's tuples bit for bit.
(b) ``dsa``: the plugin's loader with DSA on: diverse anchors, night anchors read from a night
    cache built beforehand (``dsa translate``; its build time is reported apart), CLAHE on every
    image, batched extraction, anchor-pool descriptors reused for hard-negative mining.
(c) ``reference``: DSA the reference's way: the generator run online on every selected anchor
    every time it is used (anchor pool, anchor re-extraction, training), the reference's
    diverse-anchor loop (``reference_diverse_anchors`` of tests/oracles.py, the baseline of
    benchmarks/mining.py), anchors re-extracted, one image per forward pass.

Sizes keep the reference's proportions per epoch (Q tuples : Qp anchor pool : P negative pool =
2000 : 10000 : 22000, 5 negatives, 25 % night anchors) scaled down to the AMOS photos
(``../shared/data/amos-daynight``, one webcam = one cluster; procedural images when absent).
Network: ResNet-101 GeM (cirtorch's default architecture, random init); ``--net small`` is a
4-conv toy network against which CPU CLAHE and JPEG decoding weigh as much as the network (not what
anyone trains). Generator: the full 9-block, ngf-64 ResnetGenerator (random weights: speed
does not depend on them).

Timing: on CPU the process's CPU time, children included (DataLoader workers), with one torch
thread (``--threads``): on a shared machine wall time measures the neighbours. (a) and (b) are
repeated alternately and the medians taken. On CUDA: wall time. ``overhead`` = (b)/(a) (< 1.10 is
the target), ``speedup`` = (c)/(b).

    python benchmarks/epoch.py --quick          # ResNet-50 at 80 px: ~1 min on 2 CPU cores
    python benchmarks/epoch.py                  # all 327 AMOS training images at 192 px, Q=10 (CPU, ~7 min CPU time)
    python benchmarks/epoch.py --device cuda --net resnet101
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

T_START = time.perf_counter()  # before torch is imported: the JSON reports the script's whole wall time

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from dsa_plugin.core.config import DSAConfig  # noqa: E402
from dsa_plugin.mining import AnchorSampler  # noqa: E402
from dsa_plugin.training.tuples import NightTuplesDataset  # noqa: E402

AMOS = Path(os.environ.get("DSA_AMOS_DIR", REPO.parent / "shared" / "data" / "amos-daynight"))
DB_NAME = "retrieval-SfM-120k"  # cirtorch's TuplesDataset only accepts names starting with "retrieval-SfM"
MARGIN = 0.85  # cirtorch's contrastive margin for ResNet-101
QUICK_IMSIZE = 80  # --quick: longer image side (ResNet-101 forward+backward ~0.4 s per image on one CPU thread)


# --------------------------------------------------------------------------------------------
# data


def make_db(tmp: Path, quick: bool) -> tuple[Path, str]:
    """A retrieval-SfM-format db (data root) from the AMOS photos, or from procedural images."""
    root = tmp / "data"
    if (AMOS / "labels.csv").is_file():
        from dsa_plugin.data.amos import make_amos_sfm_db

        source = AMOS
        if quick:  # every fifth photo (all 17 places): ~65 training images
            with open(AMOS / "labels.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            source = tmp / "amos-subset"
            source.mkdir()
            for part in ("day", "night"):
                os.symlink(AMOS / part, source / part)
            with open(source / "labels.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(sorted(rows, key=lambda r: r["file"])[::5])
        make_amos_sfm_db(source, root, name=DB_NAME)
        return root, f"AMOS day/night photos ({AMOS}{', every fifth' if quick else ''})"
    from dsa_plugin.data import make_tiny_sfm_db

    clusters, per = (16, 8) if quick else (24, 16)
    make_tiny_sfm_db(root, name=DB_NAME, clusters=clusters, images_per_cluster=per, size=(270, 360))
    return root, f"procedural images ({clusters} clusters x {per}, 360x270; AMOS photos not found at {AMOS})"


# --------------------------------------------------------------------------------------------
# (c)'s anchor sampler: the reference loop itself


class LiteralReferenceSampler(AnchorSampler):
    """The reference's diverse-anchor loop as written (benchmarks/mining.py), global RNG seeded per call."""

    def __init__(self, similar_exclude: float = 0.2, similar_include: float = 0.8) -> None:
        super().__init__()
        self.similar_exclude, self.similar_include = similar_exclude, similar_include

    def select(self, descriptors: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
        from oracles import reference_diverse_anchors  # tests/oracles.py: gandtr's loop (MIT), as written

        seed = int(torch.randint(0, 2**31, (1,), generator=generator).item())
        torch.manual_seed(seed)  # the reference draws from the global RNG
        picks = reference_diverse_anchors(descriptors.t().contiguous(), num, self.similar_exclude, self.similar_include)
        return torch.tensor(picks, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# the epoch


def make_net(kind: str, device: str) -> torch.nn.Module:
    from dsa_plugin.models.gem import IMAGENET_MEAN_STD, GeMNet, gem_resnet101, gem_small, gem_vgg16

    def gem_resnet50() -> GeMNet:  # the same construction as gem_resnet101, half the depth (--quick)
        from torchvision.models import resnet50

        return GeMNet(torch.nn.Sequential(*list(resnet50(weights=None).children())[:-2]), 2048, IMAGENET_MEAN_STD,
                      architecture="resnet50")

    torch.manual_seed(0)
    net = {"small": lambda: gem_small(128), "vgg16": gem_vgg16, "resnet50": gem_resnet50,
           "resnet101": gem_resnet101}[kind]()
    # cirtorch's create_epoch_tuples prints net.meta_repr()
    net.meta_repr = lambda: f"     architecture: {net.meta['architecture']}\n"  # type: ignore[attr-defined]
    return net.to(device)


# where the time goes: the plugin's per-image steps, timed in place (process CPU time on CPU, wall on CUDA)
PROFILE: dict[str, float] = {}
CLOCK: Callable[[], float] = time.process_time


def _timed(key: str, fn: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        t0 = CLOCK()
        try:
            return fn(*args, **kwargs)
        finally:
            PROFILE[key] = PROFILE.get(key, 0.0) + CLOCK() - t0

    return wrapper


def install_profile() -> None:
    """Time image loading (decode + resize), night images (cache read or generator) and CLAHE in the plugin's loader.

    Only in this process: with ``--workers`` > 0 what the workers do is not counted. cirtorch's own
    loader (a) is not instrumented: its per-image work is decode + resize, as the plugin's ``load``.
    """
    import dsa_plugin.core.images as images_mod
    import dsa_plugin.training.tuples as tuples_mod

    tuples_mod.load_image01 = _timed("load", tuples_mod.load_image01)  # tuple images
    images_mod.load_image01 = _timed("load", images_mod.load_image01)  # mining (images.ImageList)
    NightTuplesDataset._night = _timed("night", NightTuplesDataset._night)
    NightTuplesDataset._clahe = _timed("clahe", NightTuplesDataset._clahe)


def _set_batchnorm_eval(module: torch.nn.Module) -> None:
    if "BatchNorm" in type(module).__name__:
        module.eval()  # cirtorch freezes BatchNorm statistics while fine-tuning


def train_epoch(dataset, net: torch.nn.Module, device: str, batch: int = 5, workers: int = 0) -> dict[str, float]:
    """cirtorch's ``train()``: mining, then each tuple image by image, backward per tuple, a step per batch."""
    from dsa_plugin.demo.finetune import collate_tuples, contrastive_loss

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6, weight_decay=5e-4)
    t0, c0 = time.perf_counter(), cpu_time()
    dataset.create_epoch_tuples(net)
    sync(device)
    t1, c1 = time.perf_counter(), cpu_time()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         collate_fn=collate_tuples, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    net.train()
    net.apply(_set_batchnorm_eval)
    optimizer.zero_grad()
    dim = net.meta["outputdim"]
    fwd_bwd = 0.0
    for inputs, targets in loader:
        tf = CLOCK()
        for images, target in zip(inputs, targets):
            output = torch.zeros(dim, len(images), device=device)
            for i, image in enumerate(images):
                output[:, i] = net(image.to(device)).squeeze()
            contrastive_loss(output, target.to(device), MARGIN).backward()
        optimizer.step()
        optimizer.zero_grad()
        sync(device)
        fwd_bwd += CLOCK() - tf
    PROFILE["train_fwd_bwd"] = PROFILE.get("train_fwd_bwd", 0.0) + fwd_bwd
    t2, c2 = time.perf_counter(), cpu_time()
    return {"mining_s": t1 - t0, "train_s": t2 - t1, "mining_cpu_s": c1 - c0, "train_cpu_s": c2 - c1,
            "wall_s": t2 - t0, "cpu_s": c2 - c0}


def cpu_time() -> float:
    """CPU time of this process and of its finished children (DataLoader workers are joined)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cirtorch_dataset(root: Path, imsize: int, q: int, pool: int, mean_std) -> Any | None:
    """cirtorch's own TuplesDataset on ``root`` when cirtorch is importable, else None."""
    try:
        from cirtorch.datasets import traindataset
    except Exception:  # noqa: BLE001 - absent or broken on this Python: the plugin's equivalent is used
        return None
    from torchvision import transforms as T

    from dsa_plugin.integrations import compat

    compat.apply_runtime_fixes()
    traindataset.get_data_root = lambda: str(root)  # cirtorch reads its db from its own folder otherwise
    transform = T.Compose([T.ToTensor(), T.Normalize(*mean_std)])
    ds = traindataset.TuplesDataset(
        DB_NAME, "train", imsize=imsize, nnum=5, qsize=q, poolsize=pool, transform=transform
    )
    ds.print_freq = 10**9
    return ds


def cirtorch_importable() -> bool:
    try:
        from cirtorch.datasets import traindataset  # noqa: F401
    except Exception:  # noqa: BLE001 - same test as cirtorch_dataset
        return False
    return True


class Variant:
    """A named way to build the epoch's dataset."""

    def __init__(self, key: str, label: str, build: Callable[[], Any], workers: int = 0) -> None:
        self.key, self.label, self.build, self.workers = key, label, build, workers
        self.runs: list[dict[str, float]] = []


def run_variant(variant: Variant, net0: torch.nn.Module, device: str, quiet: bool = True) -> dict[str, float]:
    import io
    from contextlib import redirect_stdout

    from dsa_plugin.integrations import compat

    net = copy.deepcopy(net0)
    ds = variant.build()
    PROFILE.clear()
    torch.manual_seed(0)  # cirtorch draws its tuples from the global RNG
    with warnings.catch_warnings(), compat.cuda_noop(not device.startswith("cuda")), \
            redirect_stdout(io.StringIO() if quiet else sys.stdout):
        warnings.simplefilter("ignore")
        result = train_epoch(ds, net, device, workers=variant.workers)
    result["profile"] = dict(PROFILE)
    result["timings"] = dict(getattr(ds, "stats", {}).get("timings", {}))
    result["images_extracted"] = getattr(ds, "stats", {}).get("images_extracted")
    result["night_anchors"] = len(getattr(ds, "night_anchor_indices", []))
    source = getattr(ds, "_night_source", None)
    result["generator_runs"] = source.stats.get("online", 0) if source is not None else 0
    variant.runs.append(result)
    return result


def warm_up(ds: NightTuplesDataset, net: torch.nn.Module, device: str) -> None:
    """Thread pools, CLAHE tables, the first convolution calls: outside every timing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.extract(range(min(4, len(ds.images))), "neg-pool-mine", net, device=device)
    sync(device)


def median_of(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/epoch.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a fifth of the photos at {QUICK_IMSIZE} px, Q=5, ResNet-50 (< 2 min on 2 CPU cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--net", choices=["small", "vgg16", "resnet50", "resnet101"], default=None,
                        help="network (default resnet101; quick resnet50)")
    parser.add_argument(
        "--imsize", type=int, default=None, help=f"longer image side (CPU 192, CUDA 362; quick {QUICK_IMSIZE})"
    )
    parser.add_argument("--qsize", type=int, default=None,
                        help="tuples Q (CPU 10, CUDA 29; quick 5); Qp = 5 Q, P = 11 Q; at least 5 (one optimizer step)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="epochs of (a) and (b), alternated (CUDA 2; CPU and quick 1)"
    )
    parser.add_argument("--ngf", type=int, default=64, help="generator width (the reference's 64)")
    parser.add_argument("--blocks", type=int, default=9, help="generator residual blocks (the reference's 9)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: see the module doc)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for (b) and (c) (cirtorch uses 8)")
    parser.add_argument("--baseline", choices=["auto", "cirtorch", "plugin"], default="auto",
                        help="(a): cirtorch's TuplesDataset when importable (auto), or the plugin's with DSA off")
    return parser


def _sizes(args: argparse.Namespace, cuda: bool) -> tuple[str, int, int, int]:
    """(network, image size, tuples Q, repeats) from the flags and their defaults."""
    net_kind = args.net or ("resnet50" if args.quick else "resnet101")
    imsize = args.imsize or (QUICK_IMSIZE if args.quick else 362 if cuda else 192)
    q = max(5, args.qsize or (5 if args.quick else 29 if cuda else 10))
    repeats = args.repeats or (2 if cuda and not args.quick else 1)
    return net_kind, imsize, q, repeats


def _plain_dataset(baseline: str, root, imsize: int, q: int, pool: int, mean_std, common: dict):
    """(a): cirtorch's ``TuplesDataset`` when importable (or required), else the plugin's with DSA off."""
    if baseline != "plugin":
        ds = cirtorch_dataset(root, imsize, q, pool, mean_std)
        if ds is not None:
            return ds
        if baseline == "cirtorch":
            raise SystemExit("--baseline cirtorch: cirtorch is not importable (put it on PYTHONPATH)")
    return NightTuplesDataset(DB_NAME, "train", batch_size=1, **common)


def _row(v, key: str) -> dict:
    """One variant's medians and its last run's counts."""
    return {
        "variant": v.key,
        "label": v.label,
        "runs": len(v.runs),
        "seconds": median_of(v.runs, key),
        "mining_s": median_of(v.runs, "mining_" + key.replace("wall_", "")),
        "train_s": median_of(v.runs, "train_" + key.replace("wall_", "")),
        "wall_s": median_of(v.runs, "wall_s"),
        "images_extracted": v.runs[-1]["images_extracted"],
        "night_anchors": v.runs[-1]["night_anchors"],
        "generator_runs": v.runs[-1]["generator_runs"],
        "timings": v.runs[-1]["timings"],
        "profile": {
            k: round(median_of([r["profile"] for r in v.runs if k in r["profile"]], k), 3)
            for k in v.runs[-1]["profile"]
        },
    }


def _print_breakdown(rows: list[dict], cuda: bool) -> None:
    """Where each variant's time goes: mining phases, then loading, night images and CLAHE."""
    for r in rows:
        if r["timings"]:
            parts = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in r["timings"].items() if k != "total_s")
            print(f"  {r['variant']} mining, wall s: {parts}")
    unit = "wall s" if cuda else "CPU s"
    for r in rows:
        p = r["profile"]
        parts = [f"train forward+backward {p.get('train_fwd_bwd', 0):.2f}"]
        parts += [f"{name} {p[k]:.2f}" for k, name in (("load", "image load"), ("night", "night images"),
                                                        ("clahe", "CLAHE")) if k in p]
        print(f"  {r['variant']} where the time goes, {unit}: {', '.join(parts)}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    global CLOCK
    CLOCK = time.perf_counter if cuda else time.process_time
    install_profile()
    net_kind, imsize, q, repeats = _sizes(args, cuda)

    from dsa_plugin.data.lists import anchor_images_from_db
    from dsa_plugin.data.sfm import db_paths
    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.night import NightCache, NightSource, NightTranslator, build_night_cache

    with tempfile.TemporaryDirectory(prefix="dsa-bench-epoch-") as tmp_name:
        tmp = Path(tmp_name)
        phases: dict[str, float] = {"startup_s": time.perf_counter() - T_START}
        t_phase = time.perf_counter()
        root, origin = make_db(tmp, args.quick)
        pkl, ims = db_paths(root, DB_NAME)
        probe = NightTuplesDataset(
            DB_NAME, "train", imsize=imsize, qsize=q, poolsize=10**9, data_root=root, progress=False
        )
        qp = min(5 * q, len(probe.qpool))
        pool = min(11 * q, len(probe.images))
        mean_std = probe.mean_std

        torch.manual_seed(0)
        translator = NightTranslator(
            ResnetGenerator(ngf=args.ngf, n_blocks=args.blocks, norm="batch"), device=args.device
        )
        anchors = [p for p in anchor_images_from_db(pkl, ims, splits=("train",))]
        t0 = time.perf_counter()
        phases["setup_s"] = t0 - t_phase
        build_night_cache(tmp / "cache", anchors, translator, image_size=imsize, progress=False, workers=0)
        build_s = time.perf_counter() - t0
        cache_size = len(NightCache.open(tmp / "cache", generator=translator.fingerprint, image_size=imsize))

        common = dict(imsize=imsize, nnum=5, qsize=q, poolsize=pool, data_root=root, seed=0, progress=False)
        dsa_cfg = DSAConfig(diverse_anchors=True, clahe=True, qpool_size=qp, night_cache=str(tmp / "cache"),
                            device=args.device)

        def build_plain():
            return _plain_dataset(args.baseline, root, imsize, q, pool, mean_std, common)

        def build_dsa():
            return NightTuplesDataset(DB_NAME, "train", config=dsa_cfg, num_workers=args.workers, **common)

        def build_reference():
            ref_cfg = DSAConfig(diverse_anchors=True, clahe=True, qpool_size=qp, device=args.device)
            return NightTuplesDataset(DB_NAME, "train", config=ref_cfg, night_source=NightSource(translator),
                                      sampler=LiteralReferenceSampler(), reuse_anchor_descriptors=False,
                                      batch_size=1, num_workers=args.workers, **common)

        baseline_kind = ("cirtorch TuplesDataset" if args.baseline != "plugin" and cirtorch_importable()
                         else "NightTuplesDataset, DSA off, batch 1")
        plain = Variant("plain", f"(a) plain: {baseline_kind}", build_plain)
        dsa = Variant("dsa", "(b) DSA, plugin: cache + diverse + CLAHE", build_dsa, args.workers)
        reference = Variant(
            "reference", "(c) DSA, reference way: online G + literal loop", build_reference, args.workers
        )

        t_phase = time.perf_counter()
        net0 = make_net(net_kind, args.device)
        warm_up(build_dsa(), net0, args.device)
        phases["warm_up_s"] = time.perf_counter() - t_phase
        t_phase = time.perf_counter()
        for r in range(repeats):
            for v in ((plain, dsa) if r % 2 == 0 else (dsa, plain)):
                run_variant(v, net0, args.device)
        run_variant(reference, net0, args.device)
        phases["epochs_s"] = time.perf_counter() - t_phase

    key = "wall_s" if cuda else "cpu_s"
    rows = [_row(v, key) for v in (plain, dsa, reference)]
    by = {r["variant"]: r for r in rows}
    overhead = by["dsa"]["seconds"] / by["plain"]["seconds"]
    speedup = by["reference"]["seconds"] / by["dsa"]["seconds"]

    measure = "wall time" if cuda else f"process CPU time, {args.threads} torch thread(s)"
    print(f"one training epoch, {origin}; {len(probe.images)} training images, imsize {imsize}; "
          f"Q={q} tuples, Qp={qp}, P={pool}, 5 negatives; net {net_kind}; device {args.device}; {measure}, median")
    print(f"night cache: {cache_size} night anchors, built once in {build_s:.1f} s (not part of the epoch)")
    print(
        f"{'variant':52s} {'epoch s':>8s} {'mining s':>9s} {'train s':>8s} {'wall s':>8s} {'extracted':>9s} "
        f"{'G runs':>6s} {'runs':>4s}"
    )
    for r in rows:
        print(f"{r['label']:52s} {r['seconds']:8.2f} {r['mining_s']:9.2f} {r['train_s']:8.2f} {r['wall_s']:8.2f} "
              f"{str(r['images_extracted']):>9s} {r['generator_runs']:6d} {r['runs']:4d}")
    _print_breakdown(rows, cuda)
    phases["cache_build_s"] = build_s
    phases["total_s"] = time.perf_counter() - T_START
    print("script wall s: " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in phases.items()))
    print(f"overhead (b)/(a) = {overhead:.3f} (target <= 1.10); speedup (c)/(b) = {speedup:.2f}x (target > 1)")
    print(
        json.dumps(
            {
                "benchmark": "epoch",
                "overhead": round(overhead, 3),
                "speedup": round(speedup, 2),
                "plain_s": round(by["plain"]["seconds"], 3),
                "ours_s": round(by["dsa"]["seconds"], 3),
                "baseline_s": round(by["reference"]["seconds"], 3),
                "rows": [
                    {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "timings"}
                    for r in rows
                ],
                "cache_build_s": round(build_s, 2),
                "cache_images": cache_size,
                "generator": {"ngf": args.ngf, "blocks": args.blocks},
                "wall_total_s": round(phases["total_s"], 1),
                "timing": "wall" if cuda else "cpu",
                "size": {
                    "images": len(probe.images),
                    "imsize": imsize,
                    "qsize": q,
                    "qpool": qp,
                    "poolsize": pool,
                    "nnum": 5,
                },
                "net": net_kind,
                "baseline": baseline_kind,
                "threads": args.threads,
                "source": origin,
                "device": args.device,
                "quick": args.quick,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
