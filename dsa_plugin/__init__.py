"""Dark Side Augmentation (Mohwald, Jenicek, Chum, ICCV 2023) as a plugin for cirtorch and HOW."""

__version__ = "0.1.0"
