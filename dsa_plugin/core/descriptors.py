"""The one rule for reading a network's output as descriptors (batching: :mod:`dsa_plugin.core.batching`).

Descriptor orientation (used by mining, evaluation, the demo's fine-tuning and :func:`embed`):
cirtorch networks return one **column** per image (``D x B``), most other networks one **row**
(``B x D``). :func:`as_rows` tells them apart by the known batch size ``B``:

- ``(B, D)`` with ``D != B``: rows; ``(D, B)`` with ``D != B``: columns.
- ``B == D`` is ambiguous and settled by a declared convention: a network that declares its
  descriptor size (``dim``, from a cirtorch-style ``net.meta['outputdim']``, see :func:`declared_dim`)
  is cirtorch's, so columns; without a declared size, rows.
- 1-D output of length ``n``: ``n == B`` is ``B`` scalars (``B x 1``); for ``B == 1`` it is one
  descriptor (a squeezed ``D``, ``1 x D``); anything else is an error.
- A tuple or list output: its first element; a pooled map ``[B, D, 1, 1]``: ``[B, D]``.
- When ``dim`` is given, the descriptors must have that size (``ValueError`` otherwise).

Example:
    >>> import torch
    >>> as_rows(torch.zeros(7, 3), batch=3).shape       # cirtorch's D x B
    torch.Size([3, 7])
    >>> as_rows(torch.zeros(3), batch=3).shape          # three scalars
    torch.Size([3, 1])
    >>> as_rows(torch.zeros(3), batch=1).shape          # one squeezed descriptor
    torch.Size([1, 3])
    >>> as_rows(torch.arange(4.).view(2, 2), batch=2, dim=2)[0]   # B == D, declared: columns
    tensor([0., 2.])
    >>> as_rows(torch.arange(4.).view(2, 2), batch=2)[0]          # B == D, undeclared: rows
    tensor([0., 1.])
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

__all__ = ["as_rows", "as_columns", "declared_dim", "net_rows"]


def declared_dim(net: Any) -> int | None:
    """``net.meta['outputdim']`` of a cirtorch-style network, else ``None``.

    Example:
        >>> import torch
        >>> net = torch.nn.Identity()
        >>> declared_dim(net) is None
        True
        >>> net.meta = {"outputdim": 512}
        >>> declared_dim(net)
        512
    """
    meta = getattr(net, "meta", None)
    if isinstance(meta, dict) and meta.get("outputdim") is not None:
        return int(meta["outputdim"])
    return None


def as_rows(out: Tensor | tuple | list, batch: int, dim: int | None = None) -> Tensor:
    """``B x D`` descriptors of a network output for a batch of ``batch`` images (rule: module doc).

    Example:
        >>> import torch
        >>> as_rows(torch.zeros(128, 4), batch=4).shape   # cirtorch's D x B output
        torch.Size([4, 128])
        >>> as_rows(torch.zeros(4, 128), batch=4).shape   # B x D output
        torch.Size([4, 128])
    """
    if isinstance(out, (tuple, list)):
        out = out[0]
    shape = tuple(out.shape)
    if out.dim() == 4 and shape[-2:] == (1, 1):  # pooled map [B, D, 1, 1]
        out = out.flatten(1)
    if out.dim() == 1:
        if shape[0] == batch:
            rows = out.unsqueeze(1)
        elif batch == 1:
            rows = out.unsqueeze(0)
        else:
            raise ValueError(f"the network returned shape {shape} for a batch of {batch} images")
    elif out.dim() == 2:
        r, c = out.shape
        if r == batch and (c != batch or dim is None):
            rows = out
        elif c == batch:
            rows = out.t()
        else:
            raise ValueError(f"the network returned shape {shape} for a batch of {batch} images")
    else:
        raise ValueError(f"the network returned shape {shape}; expected D x B or B x D descriptors")
    if dim is not None and rows.shape[1] != dim:
        raise ValueError(f"the network returned shape {shape} for a batch of {batch}, "
                         f"but net.meta['outputdim'] is {dim}")
    return rows


def as_columns(out: Tensor | tuple | list, batch: int, dim: int | None = None) -> Tensor:
    """``D x B`` descriptors (cirtorch's layout): the transpose of :func:`as_rows`.

    Example:
        >>> import torch
        >>> as_columns(torch.zeros(4, 128), batch=4).shape
        torch.Size([128, 4])
    """
    return as_rows(out, batch, dim).t()


def net_rows(net: nn.Module | Callable[[Tensor], Any], x: Tensor) -> Tensor:
    """``[B, D]`` descriptors of ``x [B, 3, H, W]``: ``net(x)`` read by :func:`as_rows` with
    :func:`declared_dim` (``net`` may be any callable).

    Example:
        >>> import torch
        >>> from dsa_plugin.models.gem import gem_small
        >>> net_rows(gem_small(8).eval(), torch.rand(3, 3, 32, 32)).shape
        torch.Size([3, 8])
    """
    return as_rows(net(x), x.shape[0], declared_dim(net))
