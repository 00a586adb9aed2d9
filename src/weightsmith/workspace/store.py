"""Content-addressed artifact store on the local filesystem.

Files are stored under their sha256; a directory (a model version) under the sha256 of its
manifest (sorted relative paths and file hashes). Everything is written to a temporary name
inside the store and renamed into place, so a crash never leaves a half-written artifact
where a reader would find it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_hash(root: Path) -> str:
    """The hash of a directory: its files' relative paths and contents, order-independent."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        lines.append(f"{path.relative_to(root).as_posix()}\t{sha256_file(path)}")
    return sha256_bytes("\n".join(lines).encode())


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _tmp_dir(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def put_bytes(self, data: bytes, suffix: str = "") -> tuple[str, Path]:
        """Store ``data``; return (hash, path). Storing the same bytes twice is a no-op."""
        digest = sha256_bytes(data)
        dest = self.root / "sha256" / digest[:2] / f"{digest}{suffix}"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._tmp_dir())
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        return digest, dest

    def put_tree(self, src: Path, *, move: bool = False) -> tuple[str, Path]:
        """Store the directory ``src`` (moved when ``move``, else copied); return (hash, path)."""
        digest = tree_hash(src)
        dest = self.root / "trees" / digest
        if dest.exists():
            if move:
                shutil.rmtree(src)
            return digest, dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self._tmp_dir())) / "tree"
        if move:
            shutil.move(str(src), staging)
        else:
            shutil.copytree(src, staging)
        try:
            os.replace(staging, dest)
        except OSError:
            if not dest.is_dir():
                raise
            # A concurrent caller stored the same tree first (a directory cannot be replaced
            # over a full one): theirs is the same content, so ours is dropped.
        shutil.rmtree(staging.parent, ignore_errors=True)
        return digest, dest
