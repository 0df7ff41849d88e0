"""Images in: decoding, EXIF, limits; folders and manifests -> catalogue entries."""

from lookalike.io.catalog import CatalogEntry, expand_paths, read_manifest, scan_folder
from lookalike.io.images import IMAGE_EXTENSIONS, file_hash, load_image, to_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "CatalogEntry",
    "expand_paths",
    "file_hash",
    "load_image",
    "read_manifest",
    "scan_folder",
    "to_rgb",
]
