"""The source distributions of the tools fedmq claims compatibility with.

The compatibility tests read files that only a tool's source distribution
ships (fedora-messaging's example and Fedora configuration files, its test
fixtures), so that they test fedmq against the real thing and not against a
copy written here. ``make venv`` runs this module once, at install time:

    python -m tests.anchors

which downloads the sdist of the installed version of each tool from the
package index pip is configured with, checks its SHA-256 digest against the
index's, and unpacks it under ``<venv>/share/fedmq-anchors/``. Tests find it
with :func:`sdist_dir`; nothing is downloaded at test time.

pip itself cannot download these sdists (fedora-messaging's metadata uses a
requirement syntax that current pip rejects), hence this small fetcher.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import ssl
import sys
import tarfile
import urllib.request
from pathlib import Path

#: Distribution name -> the name its sdist unpacks under.
ANCHORS = {"fedora-messaging": "fedora_messaging"}

ANCHOR_ROOT = Path(sys.prefix) / "share" / "fedmq-anchors"


def sdist_dir(distribution: str) -> Path:
    """The unpacked sdist of the installed version of ``distribution``.

    Raises:
        FileNotFoundError: it was not fetched; the message says how to fetch it.

    """
    version = importlib.metadata.version(distribution)
    path = ANCHOR_ROOT / f"{ANCHORS[distribution]}-{version}"
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is missing: run 'python -m tests.anchors' (make venv does) to fetch "
            f"the {distribution} {version} source distribution the compatibility tests read"
        )
    return path


def _simple_index() -> str:
    index = os.environ.get("PIP_INDEX_URL", "")
    if index:
        return index.rstrip("/")
    from pip._internal.models.index import PyPI  # the index pip uses by default

    return str(PyPI.simple_url).rstrip("/")


def _context() -> ssl.SSLContext:
    cafile = os.environ.get("PIP_CERT") or None
    if cafile is None:
        for candidate in ("/etc/ssl/certs/ca-certificates.crt",):
            if Path(candidate).exists():
                cafile = candidate
    return ssl.create_default_context(cafile=cafile)


def fetch(distribution: str) -> Path:
    """Download, check and unpack the sdist of the installed ``distribution``."""
    version = importlib.metadata.version(distribution)
    target = ANCHOR_ROOT / f"{ANCHORS[distribution]}-{version}"
    if target.is_dir():
        return target
    filename = f"{ANCHORS[distribution]}-{version}.tar.gz"
    request = urllib.request.Request(  # noqa: S310 - the index's JSON form (PEP 691)
        f"{_simple_index()}/{distribution}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    # The package index pip uses, and the file URLs it lists: https, never a local path.
    with urllib.request.urlopen(request, timeout=60, context=_context()) as response:  # noqa: S310
        files = json.load(response)["files"]
    sdist = next((item for item in files if item["filename"] == filename), None)
    if sdist is None:
        raise SystemExit(f"the package index has no {filename}")
    with urllib.request.urlopen(sdist["url"], timeout=120, context=_context()) as response:  # noqa: S310
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sdist["hashes"]["sha256"]:
        raise SystemExit(f"{filename}: SHA-256 {digest} is not the index's")
    ANCHOR_ROOT.mkdir(parents=True, exist_ok=True)
    partial = ANCHOR_ROOT / f".partial-{target.name}"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(partial, filter="data")
    (inner,) = partial.iterdir()
    inner.rename(target)
    partial.rmdir()
    return target


if __name__ == "__main__":
    for name in ANCHORS:
        print(f"{name}: {fetch(name)}")
