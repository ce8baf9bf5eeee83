"""Where the package's data files are: the checkout when running from source, else the installed share folder."""

import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def share_dir() -> Path:
    if (SOURCE_ROOT / 'config').is_dir():
        return SOURCE_ROOT
    prefix_share = Path(sys.prefix) / 'share' / 'asyncvla_ros'  # pip into a venv, without a sourced setup
    if prefix_share.is_dir():
        return prefix_share
    from ament_index_python.packages import get_package_share_directory  # noqa: PLC0415 (installed package only)

    return Path(get_package_share_directory('asyncvla_ros'))


def config_path(*parts: str) -> Path:
    return share_dir() / 'config' / Path(*parts)
