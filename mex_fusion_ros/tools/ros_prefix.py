"""Make a pip-installed prefix look like a colcon install prefix to ``ros2 run`` / ``ros2 launch``.

Two things colcon does that an editable ``pip install -e .`` does not:

1. ``share/``: pip's editable install skips ``data_files``, so the ament index marker and
   ``share/mex_fusion_ros/{launch,config,weights,package.xml}`` are linked here into the prefix
   (symlinks, like ``colcon build --symlink-install``: edits in the checkout take effect at once).
   ``setup.py`` takes its ``data_files`` from ``share_layout`` too, so the two cannot disagree.
2. executables: colcon honours ``setup.cfg``'s ``install_scripts=$base/lib/mex_fusion_ros``; pip ignores it and
puts console scripts in ``<prefix>/bin``. ``ros2 run`` and launch_ros look executables up in
``<prefix>/lib/<package>/`` (the "libexec directory"), so this links every console script of the
installed distribution there. The list comes from the distribution's own entry points, so nothing
here needs editing when an executable is added to ``setup.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata
from pathlib import Path

from mex_fusion_ros import PACKAGE_NAME

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def share_layout(source_root: Path = SOURCE_ROOT) -> list[tuple[str, list[str]]]:
    """``data_files`` of the package: (install directory, [source files relative to the root])."""
    def files(pattern: str) -> list[str]:
        return sorted(str(p.relative_to(source_root)) for p in source_root.glob(pattern)
                      if p.is_file() and p.name != ".gitkeep")

    return [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        (f"share/{PACKAGE_NAME}/launch", files("launch/*.launch.py")),
        (f"share/{PACKAGE_NAME}/config", files("config/*.yaml") + files("config/*.xml")),
        (f"share/{PACKAGE_NAME}/weights", files("weights/*")),
    ]


def link_share(prefix: Path, source_root: Path = SOURCE_ROOT) -> list[Path]:
    """Symlink every ``share_layout`` file into ``prefix``; stale links of ours are removed."""
    links = []
    for install_dir, sources in share_layout(source_root):
        directory = prefix / install_dir
        directory.mkdir(parents=True, exist_ok=True)
        if install_dir != "share/ament_index/resource_index/packages":
            for old in directory.iterdir():
                if old.is_symlink():
                    old.unlink()
        for source in sources:
            link = directory / Path(source).name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source_root / source)
            links.append(link)
    return links


def site_packages(prefix: Path) -> Path:
    """``<prefix>/lib/pythonX.Y/site-packages`` for this interpreter's version."""
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def console_scripts(prefix: Path, distribution: str = PACKAGE_NAME) -> list[str]:
    """Names of the console scripts the distribution installed in ``prefix`` declares."""
    found = list(metadata.distributions(name=distribution, path=[str(site_packages(prefix))]))
    if not found:  # e.g. a --user or system install: fall back to the interpreter's own path
        found = [metadata.distribution(distribution)]
    return sorted(ep.name for ep in found[0].entry_points if ep.group == "console_scripts")


def link_executables(prefix: Path, distribution: str = PACKAGE_NAME) -> list[Path]:
    """Link ``<prefix>/bin/<script>`` into ``<prefix>/lib/<package>/<script>``; return the links."""
    bin_dir = prefix / "bin"
    libexec = prefix / "lib" / PACKAGE_NAME
    libexec.mkdir(parents=True, exist_ok=True)
    links = []
    for name in console_scripts(prefix, distribution):
        target = bin_dir / name
        if not target.exists():
            raise FileNotFoundError(f"console script {name!r} is not installed at {target}")
        link = libexec / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(target, libexec))
        links.append(link)
    return links


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix), help="install prefix (the venv)")
    args = parser.parse_args(argv)
    prefix = args.prefix.resolve()
    shared = link_share(prefix)
    links = link_executables(prefix)
    print(f"ros_prefix: {len(shared)} share files and {len(links)} executables linked into {prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
