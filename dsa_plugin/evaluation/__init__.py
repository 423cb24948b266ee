"""Retrieval evaluation: standard mAP protocols, test sets, multi-scale descriptors, learned whitening.

Typical use::

    from dsa_plugin.evaluation import load_embedding_network, evaluate_folder, evaluate_test_set
    net = load_embedding_network("embed.pth", device="cuda", whitening="embed_lw.pkl")
    evaluate_test_set(net, "roxford5k", data_root)["medium"]["map"]
    evaluate_folder(net, "my-photos/", role="eval")["night->day"]["map"]
"""

from dsa_plugin.evaluation.datasets import (
    FolderDataset,
    RetrievalSet,
    TestSetError,
    load_folder_dataset,
    load_test_set,
)
from dsa_plugin.evaluation.descriptors import (
    DEFAULT_SCALES,
    extract_descriptors,
    multiscale_descriptors,
    multiscale_power,
)
from dsa_plugin.evaluation.metrics import (
    MapResult,
    average_precision,
    compute_map,
    evaluate_ranks,
    rank_database,
    revisited_gnd,
)
from dsa_plugin.evaluation.whitening import (
    Whitening,
    WhiteningError,
    apply_whitening,
    learn_whitening,
    load_whitening,
    save_whitening,
)

__all__ = [
    "FolderDataset", "RetrievalSet", "TestSetError", "load_folder_dataset", "load_test_set",
    "DEFAULT_SCALES", "extract_descriptors", "multiscale_descriptors", "multiscale_power",
    "MapResult", "average_precision", "compute_map", "evaluate_ranks", "rank_database", "revisited_gnd",
    "Whitening", "WhiteningError", "apply_whitening", "learn_whitening", "load_whitening", "save_whitening",
    "load_embedding_network", "evaluate_folder", "evaluate_test_set", "learn_whitening_from_db",
]


def __getattr__(name):
    # network loading and the runners pull in torchvision / checkpoints: import on first use
    if name == "load_embedding_network":
        from dsa_plugin.evaluation.networks import load_embedding_network

        return load_embedding_network
    if name in ("evaluate_folder", "evaluate_test_set", "learn_whitening_from_db"):
        from dsa_plugin.evaluation import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'dsa_plugin.evaluation' has no attribute {name!r}")
