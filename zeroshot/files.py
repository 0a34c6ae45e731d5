"""Files, whole or not at all: the one atomic-write helper (unique temp name, renamed when complete), text files
read with their encoding errors named, a file's sha256 remembered across runs, and the verified download cache.
"""
from __future__ import annotations

import codecs
import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from zeroshot.errors import CheckpointError, TextFileError
from zeroshot.log import log
from zeroshot.paths import default_cache_dir


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_version(name: str) -> str:
    """An installed package's `__version__`, without importing it where it ships a `version.py` (torchvision's
    import costs a second, and a run on cached features needs only its version). importlib.metadata is no
    substitute: it drops the local tag that `__version__` carries (0.29.1 for 0.29.1+cu130)."""
    import sys

    if name in sys.modules:
        return sys.modules[name].__version__
    import ast
    import importlib
    import importlib.util

    spec = importlib.util.find_spec(name)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "version.py"
        if not path.is_file():
            continue
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                return node.value.value
    return importlib.import_module(name).__version__


def _umask() -> int:
    """The process umask, read without a window where it is changed: /proc/self/status has it on Linux; elsewhere
    os.umask is set and restored at once (a thread creating a file in that instant gets 0o077 at worst)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb"):
    """Write `path` whole or not at all: into a uniquely named temp file beside it (two writers never share one),
    renamed into place only when the block ends without an error; the temp file never outlives the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        # mkstemp creates 0600; a result or cache file gets what open() would give, so colleagues can read it
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_columns(path: str | Path, columns: dict) -> None:
    """A table of equal-length columns as CSV, atomically: the bytes pandas' `DataFrame(columns).to_csv(path,
    index=False)` writes (floats as their shortest repr, NaN as an empty field, minimal quoting, \n line ends),
    without importing pandas (a third of a second of an eval's start-up)."""
    import csv
    import math

    def cells(column) -> list:
        dtype = getattr(column, "dtype", None)
        if dtype is not None and dtype.kind == "f":  # numpy's str is the shortest repr at the array's own precision
            return ["" if math.isnan(v) else str(v) for v in column]
        return column.tolist() if hasattr(column, "tolist") else [
            "" if isinstance(v, float) and math.isnan(v) else v for v in column]

    with atomic_write(path, "w") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(columns)
        out.writerows(zip(*(cells(c) for c in columns.values())))


def file_sha256(path: str | Path, cache_root: str | Path | None = None) -> str:
    """sha256 of a file, computed once per (path, size, mtime, inode) and remembered in the cache.

    One small JSON file per checkpoint path, written atomically; a cache that cannot be written only
    means the hash is computed again next time.
    """
    path = Path(path)
    key = _stat_key(path)
    root = Path(cache_root) if cache_root is not None else default_cache_dir()
    entry = root / "sha256" / f"{hashlib.sha256(key['path'].encode()).hexdigest()[:32]}.json"
    try:
        saved = json.loads(entry.read_text())
        if {k: saved.get(k) for k in key} == key and len(saved.get("sha256", "")) == 64:
            return saved["sha256"]
    except (OSError, ValueError):
        pass
    sha = sha256sum(path)
    if _stat_key(path) == key:  # unchanged while we read it
        try:
            with atomic_write(entry, "w") as f:
                json.dump({**key, "sha256": sha}, f)
        except OSError:
            pass
    return sha


def _matches(digest: str, sha256: str | None, prefix: str | None) -> bool:
    return (sha256 is None or digest == sha256) and (prefix is None or digest.startswith(prefix))


def download(url: str, sha256: str | None = None, root: str | Path | None = None, sha256_prefix: str | None = None) -> Path:
    """Fetch `url` into the cache, verified: a temp file is renamed into place only once its sha256 matches.

    A cached file is re-hashed before it is trusted; a mismatching one is removed and fetched again.
    """
    root = Path(root) if root is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / Path(url).name
    expected = sha256 or (f"{sha256_prefix}..." if sha256_prefix else None)
    if target.is_file():
        if _matches(sha256sum(target), sha256, sha256_prefix):
            return target
        log.warning("cached %s does not match sha256 %s; removing it and downloading again", target, expected)
        target.unlink()

    with atomic_write(target) as out:  # renamed into place only once verified: a raise below discards it
        digest, size, total = _fetch(url, out, target.name)
        if total is not None and size != total:
            raise CheckpointError(f"Download of {url} was cut short: got {size} of {total} bytes. The partial file was removed; try again.")
        if not _matches(digest, sha256, sha256_prefix):
            raise CheckpointError(
                f"Downloaded {url} but its sha256 is {digest}, expected {expected}. "
                "The corrupt file was removed; try again, or load a verified local copy by path."
            )
    return target


def _fetch(url: str, out, label: str) -> tuple[str, int, int | None]:
    """Stream `url` into `out` with a progress bar; returns (sha256, bytes written, Content-Length)."""
    from tqdm import tqdm

    digest, size, total = hashlib.sha256(), 0, None
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label) as bar:
                while block := response.read(1 << 16):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
    except http.client.IncompleteRead:
        pass  # reported below as a short download, with the byte counts
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise CheckpointError(
            f"Could not download {url}: {getattr(e, 'reason', None) or e}. "
            f"If this machine is offline, fetch the file elsewhere and load it by path: "
            f"zeroshot.load('/path/to/{label}'), or `python -m zeroshot eval model.checkpoint=/path/to/{label}`."
        ) from e
    return digest.hexdigest(), size, total


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(data: bytes, what: str) -> str:
    """`data` as text: UTF-8 (BOM optional), or UTF-16/32 announced by their BOM; else a TextFileError."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TextFileError(
            f"{what} is not {encoding.upper().replace('-SIG', '')} text: byte 0x{data[e.start]:02x} on line {line} "
            f"(offset {e.start}) cannot be decoded. Save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > NEW`)"
        ) from None


def read_text(path: str | Path, what: str | None = None) -> str:
    """The whole file as text; `what` names it in errors (default: the path)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TextFileError(f"{what or path} cannot be read ({e.strerror or e})") from None
    return decode_text(data, what or str(path))


def read_json(path: str | Path, what: str | None = None):
    """A JSON file, with its encoding and syntax errors named on one line."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TextFileError(f"{what or path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
