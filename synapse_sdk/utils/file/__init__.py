"""File utilities of synapse-sdk: downloads into the SDK's cache folder, and that folder's housekeeping."""

from __future__ import annotations

from synapse_sdk.utils.file.download import (
    adownload_file,
    afiles_url_to_path,
    afiles_url_to_path_from_objs,
    download_file,
    download_json,
    files_url_to_path,
    files_url_to_path_from_objs,
)
from synapse_sdk.utils.file.io import (
    DEFAULT_MAX_TEMP_FILES,
    decode_base64_data,
    evict_temp_files,
    get_temp_path,
    is_base64_data,
    protect_temp_file,
    protect_temp_files,
    unprotect_temp_file,
)

__all__ = [
    "DEFAULT_MAX_TEMP_FILES",
    "adownload_file",
    "afiles_url_to_path",
    "afiles_url_to_path_from_objs",
    "decode_base64_data",
    "download_file",
    "download_json",
    "evict_temp_files",
    "files_url_to_path",
    "files_url_to_path_from_objs",
    "get_temp_path",
    "is_base64_data",
    "protect_temp_file",
    "protect_temp_files",
    "unprotect_temp_file",
]
