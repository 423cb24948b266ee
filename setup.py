from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "dsa_plugin" / "__init__.py").read_text(), version)

setup(
    name="dsa-plugin",
    version=version["__version__"],
    description="Dark Side Augmentation (ICCV 2023) for day-night image retrieval, as a plugin for cirtorch and HOW",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["dsa_plugin", "dsa_plugin.*"]),
    # dsa_plugin/configs/ is a copy of the top-level configs/ (tests/test_package_data.py keeps them identical)
    package_data={"dsa_plugin": ["configs/*.yaml", "configs/cirtorch/*.yaml", "configs/how/*.yml"]},
    install_requires=[
        "torch>=2.1,<2.15",
        "torchvision>=0.16,<0.30",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "pillow>=9.5",
        "tqdm>=4.60",
        "h5py>=3.8",
    ],
    extras_require={
        "test": [
            "pytest>=7.4",
            "opencv-python-headless>=4.8",
            "scipy>=1.10",
        ],
        "how": ["asmk>=0.1", "faiss-cpu>=1.7", "matplotlib>=3.5"],
        "tensorboard": ["tensorboard>=2.12"],
    },
    entry_points={"console_scripts": ["dsa=dsa_plugin.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
