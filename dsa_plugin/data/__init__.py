"""Dataset layouts shared by the plugin: the retrieval-SfM training db and image folders."""

from dsa_plugin.data.sfm import SfMDB, SfMFormatError, cid_to_path, load_sfm_db, make_tiny_sfm_db, write_sfm_db

__all__ = ["SfMDB", "SfMFormatError", "cid_to_path", "load_sfm_db", "make_tiny_sfm_db", "write_sfm_db"]
