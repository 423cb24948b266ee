"""Locating and importing HOW (a clone: HOW has no setup.py) for ``dsa how-train``."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

HOW_SRC_ENV = "HOW_SRC"


class HOWIntegrationError(RuntimeError):
    """HOW (or one of its dependencies) is missing or not the expected version."""


def locate_how(how_src: str | os.PathLike | None = None) -> Path:
    """Root of a HOW checkout: ``how_src``, else ``$HOW_SRC``, else the importable ``how`` package.

    The root must hold ``how/stages/train.py`` and ``examples/demo_how.py`` (HOW has no setup.py,
    so a clone is the only way to get it).
    """
    tried: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if how_src:
        candidates.append(("--how-src", Path(how_src)))
    elif os.environ.get(HOW_SRC_ENV):
        candidates.append((f"${HOW_SRC_ENV}", Path(os.environ[HOW_SRC_ENV])))
    else:
        spec = importlib.util.find_spec("how")
        if spec is not None and spec.origin:
            candidates.append(("importable package 'how'", Path(spec.origin).resolve().parent.parent))
    for origin, root in candidates:
        root = root.expanduser().resolve()
        missing = [p for p in ("how/stages/train.py", "examples/demo_how.py") if not (root / p).is_file()]
        if not missing:
            return root
        tried.append(f"{origin} = {root} (lacks {', '.join(missing)})")
    detail = "; ".join(tried) if tried else "no --how-src, no $HOW_SRC and no importable 'how' package"
    raise HOWIntegrationError(
        f"HOW source not found: {detail}. Clone it (git clone https://github.com/gtolias/how) and pass "
        f"--how-src <clone> or set {HOW_SRC_ENV}=<clone>."
    )


def _require(module: str, hint: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise HOWIntegrationError(f"HOW needs the Python package '{module}', which is not installed: {hint}")


def import_how(root: Path) -> dict[str, Any]:
    """Import HOW's modules from ``root`` (put first on ``sys.path``); returns them by short name.

    ``sys.path`` keeps ``root``: a process-wide change, listed in
    :data:`dsa_plugin.integrations.compat.GLOBAL_PATCHES`.
    """
    _require("cirtorch", "clone filipradenovic/cnnimageretrieval-pytorch and `pip install --no-deps -e <clone>`")
    _require("asmk", "`pip install asmk faiss-cpu` (or `pip install dsa-plugin[how]`)")
    _require("faiss", "`pip install faiss-cpu`")
    loaded = sys.modules.get("how")
    if loaded is not None and getattr(loaded, "__file__", None):
        here = Path(loaded.__file__).resolve().parent.parent
        if here != root:
            raise HOWIntegrationError(f"another HOW is already imported from {here}; asked for {root}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import how.networks.how_net as how_net
    import how.stages.train as train
    import how.utils.io_helpers as io_helpers
    import how.utils.plots as plots

    return {"how_net": how_net, "train": train, "io_helpers": io_helpers, "plots": plots}


def load_demo(root: Path):
    """HOW's ``examples/demo_how.py`` as a module (its ``main(argv)`` is the HOW command line)."""
    path = root / "examples" / "demo_how.py"
    spec = importlib.util.spec_from_file_location("how_demo_how", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
