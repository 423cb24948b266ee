"""The published DSA embeddings as cirtorch networks, for cirtorch's own test-time code.

The gandtr embedding checkpoints (``hedngan_embed_vgg16.pth``, ``cyclegan_embed_resnet101.pth``,
...; docs/reference.md §embedding-state-dict, §checkpoint-format) are 4-key dicts whose
``model_state`` uses cirtorch's own key names (``features.N...``, ``pool.p``): they load strictly
into cirtorch's ``ImageRetrievalNet`` built by ``init_network(pretrained=False)`` (nothing is
downloaded). The test-time pipeline of the paper (docs/reference.md §test-pipeline) is then
cirtorch's extraction loop with CLAHE in front of the transform,
scales ``[1, 1/sqrt(2), 1/2]`` aggregated with the learned GeM ``p``, and the published
``*_lw.pkl`` whitening applied with cirtorch's ``whitenapply``.

Example::

    net = load_cirtorch_embedding("hedngan_embed_vgg16.pth")
    vecs = cirtorch_descriptors(net, images, whitening="hedngan_embed_vgg16_lw.pkl")  # D x N

(``dsa evaluate`` covers the same checkpoints with the plugin's own GeM network.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dsa_plugin.integrations import compat
from dsa_plugin.models.checkpoint_files import CheckpointError, load_checkpoint
from dsa_plugin.models.checkpoints import extract_state_dict, load_into

#: The paper's test scales (docs/reference.md §test-pipeline).
PAPER_SCALES = (1.0, 1.0 / math.sqrt(2.0), 0.5)


def embedding_architecture(obj: Any, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """cirtorch architecture name of an embedding checkpoint (from its params, else its keys)."""
    if isinstance(obj, Mapping):
        params = (
            (obj.get("network_params") or {}).get("model") if isinstance(obj.get("network_params"), Mapping) else None
        )
        if isinstance(params, Mapping):
            arch = (
                params.get("cir_architecture") if params.get("architecture") == "cirnet" else params.get("architecture")
            )
            for key in ("pooling", "local_whitening", "regional", "whitening"):
                wanted = "gem" if key == "pooling" else False
                if key in params and params[key] != wanted:
                    raise CheckpointError(f"{source}: network_params.model.{key} is {params[key]!r}; "
                                          f"only {wanted!r} (global GeM, no whitening layer) is supported")
            if arch:
                return str(arch)
        meta = obj.get("meta")
        if isinstance(meta, Mapping) and meta.get("architecture"):
            return str(meta["architecture"])
    keys = set(state_dict)
    if "features.4.0.conv1.weight" in keys:
        blocks = len({k.split(".")[2] for k in keys if k.startswith("features.6.")})
        bottleneck = "features.4.0.conv3.weight" in keys
        table = {(True, 6): "resnet50", (True, 23): "resnet101", (True, 36): "resnet152",
                 (False, 2): "resnet18", (False, 6): "resnet34"}
        if (bottleneck, blocks) in table:
            return table[(bottleneck, blocks)]
    if "features.28.weight" in keys and "features.30.weight" not in keys:
        return "vgg16"
    raise CheckpointError(f"{source}: cannot tell the architecture from network_params or the keys "
                          f"(first keys: {sorted(keys)[:4]}); expected a cirnet/cirtorch GeM embedding")


def cirtorch_network_from_checkpoint(obj: Any, source: str = "checkpoint") -> nn.Module:
    """cirtorch's ``ImageRetrievalNet`` (GeM, no whitening layer) strictly loaded from a checkpoint object."""
    from cirtorch.networks.imageretrievalnet import OUTPUT_DIM, init_network

    sd = extract_state_dict(obj, source=source)
    arch = embedding_architecture(obj, sd, source)
    if arch not in OUTPUT_DIM:
        raise CheckpointError(f"{source}: architecture {arch!r} is not one of cirtorch's: {sorted(OUTPUT_DIM)}")
    params = {"architecture": arch, "pooling": "gem", "local_whitening": False, "regional": False,
              "whitening": False, "pretrained": False}
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    if isinstance(meta, Mapping) and "mean" in meta and "std" in meta:
        params.update(mean=list(meta["mean"]), std=list(meta["std"]))
    # Every parameter and buffer comes from the checkpoint (strict load), so build on the meta
    # device: no random init, and torchvision's unused classifier (VGG16: 120M weights) is never allocated.
    with torch.device("meta"):
        net = init_network(params)
    net = net.to_empty(device="cpu")
    return load_into(net, sd, source=source)


def load_cirtorch_embedding(path_or_url: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load a published (or locally trained) DSA embedding into cirtorch's network, eval mode.

    Accepts the gandtr 4-key layout, cirtorch's ``{meta, state_dict}`` and a raw state dict.
    """
    source = os.fspath(path_or_url)
    net = cirtorch_network_from_checkpoint(load_checkpoint(path_or_url), source=source)
    return net.to(device).eval().requires_grad_(False)


def paper_test_transform(net: nn.Module, clahe: bool = True) -> Any:
    """The paper's test transform for ``net``: [CLAHE on the float image] -> tensor -> normalise."""
    import torchvision.transforms as T

    normalize = T.Normalize(mean=net.meta["mean"], std=net.meta["std"])
    if clahe:
        from dsa_plugin.transforms import CLAHETransform

        return T.Compose([CLAHETransform(as_tensor=True), normalize])
    return T.Compose([T.ToTensor(), normalize])


def _whitening(whitening: str | os.PathLike | Mapping | None) -> dict | None:
    if whitening is None:
        return None
    from dsa_plugin.evaluation.whitening import load_whitening, validate_whitening

    return validate_whitening(whitening) if isinstance(whitening, Mapping) else load_whitening(whitening)


def cirtorch_descriptors(
    net: nn.Module,
    images: Sequence[str],
    image_size: int = 1024,
    clahe: bool = True,
    scales: Sequence[float] = PAPER_SCALES,
    whitening: str | os.PathLike | Mapping | None = None,
    bbxs: Sequence[Sequence[float]] | None = None,
    workers: int = 4,
    progress: bool = True,
) -> np.ndarray:
    """Descriptors (D x N, float) with cirtorch's own image list, ``extract_ss``/``extract_ms`` and ``whitenapply``.

    This is cirtorch's ``extract_vectors`` loop with CLAHE in the transform, the network's own
    device instead of ``.cuda()`` and a choice of loader ``workers`` (cirtorch hard-codes 8).
    Multi-scale vectors use the learned GeM ``p`` as the power, as cirtorch's ``test.py`` does for
    GeM networks. ``whitening``: a ``*_lw.pkl`` path or ``{'m', 'P'}``.
    """
    from cirtorch.datasets.genericdataset import ImagesFromList
    from cirtorch.networks.imageretrievalnet import extract_ms, extract_ss
    from cirtorch.utils.whiten import whitenapply
    from tqdm.auto import tqdm

    compat.apply_runtime_fixes()
    lw = _whitening(whitening)  # fail on a bad file before the extraction
    p = net.pool.p.detach().cpu().item() if hasattr(getattr(net, "pool", None), "p") else 1.0
    scales = [float(s) for s in scales]
    device = next(net.parameters()).device
    transform = compat.WithRuntimeFixes(paper_test_transform(net, clahe))
    loader = torch.utils.data.DataLoader(
        ImagesFromList(root="", images=list(images), imsize=image_size, bbxs=bbxs, transform=transform),
        batch_size=1, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
        worker_init_fn=compat.worker_init_fn,
    )
    net.eval()
    vecs = torch.zeros(net.meta["outputdim"], len(images))
    with torch.no_grad():
        for i, x in enumerate(tqdm(loader, desc="cirtorch descriptors", disable=not progress, leave=False)):
            x = x.to(device)
            vecs[:, i] = extract_ss(net, x) if scales == [1.0] else extract_ms(net, x, scales, p)
    out = vecs.numpy()
    if lw is not None:
        out = whitenapply(out, lw["m"], lw["P"])
    return out
