"""One check for every ``--device``-like option: a torch device that exists on this machine.

Asked before any file is written or model built, so ``--device foo`` or ``--device cuda`` on a
machine without a GPU is one clear error instead of a traceback halfway through a run.
"""

from __future__ import annotations


class DeviceError(ValueError):
    """The device string is not a device, or names one this machine does not have."""


def check_device(text: str, option: str = "--device") -> str:
    """``text`` unchanged when it names a usable device (cpu, cuda, cuda:N, mps); else DeviceError.

    Example:
        >>> check_device("cpu")
        'cpu'
    """
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"{option} {text!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"{option} {text!r}: no CUDA device is available on this machine; use cpu")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"{option} {text!r}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"{option} {text!r}: MPS is not available on this machine; use cpu")
    elif device.type != "cpu":
        raise DeviceError(f"{option} {text!r}: unsupported device type {device.type!r}; use cpu, cuda or cuda:N")
    return text
