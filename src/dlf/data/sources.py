"""Dataset registry, file resolution, verified download and validated text loading.

A named dataset resolves in this order: an explicit path; ``$DLF_DATA_DIR/<file>``;
the xz-compressed copy shipped in this package (``dlf/data/<file>.xz``); the user
cache (``$DLF_CACHE_DIR`` or ``~/.cache/dlf``); else it is downloaded from its
canonical URL, checked against its sha256 and written atomically into the cache.
The packaged copy is what makes a first run work with no network and from a bare
copy of the repository (``PYTHONPATH=src``); it is decompressed in memory and
checked against the registry's sha256 of the plain file every time it is read.
Any other UTF-8 text file works too, in ``lines`` or ``text`` format.

``resolve`` answers *where* a dataset is: a ``Path`` on disk or a ``Packaged``
resource. ``read_text`` turns either into validated text, so every source passes
the same checks (UTF-8, no NUL bytes, not empty).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import lzma
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal, get_args

from dlf.errors import DlfError

log = logging.getLogger(__name__)

Format = Literal["lines", "text"]  # one item per line, or one stream of text
FORMATS = get_args(Format)
# An 80/10/10 split of fewer lines leaves val or test empty.
MIN_LINES = 10
_CHUNK = 1 << 16
# The packaged copy of <file> is <file> + PACKED_SUFFIX inside this package;
# tools/pack_data.py writes it.
PACKED_SUFFIX = ".xz"


@dataclass(frozen=True)
class Source:
    """One downloadable dataset: where it lives, how to check it, how to read it."""

    name: str
    file: str
    sha256: str
    url: str
    format: str


DATASETS: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="names",
            file="names.txt",
            sha256="0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
            url="https://raw.githubusercontent.com/karpathy/makemore/master/names.txt",
            format="lines",
        ),
        Source(
            name="shakespeare",
            file="tinyshakespeare.txt",
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            format="text",
        ),
    )
}


@dataclass(frozen=True)
class Packaged:
    """The compressed copy of a registered dataset shipped inside the package.

    Not a file on disk (the package may live in a zip or wheel): ``read_text``
    reads it through ``resource`` and checks the plain bytes against the registry.
    """

    source: Source
    resource: Traversable

    def __str__(self) -> str:
        return f"packaged copy of {self.source.file}"


def packaged_file(source: Source) -> Traversable:
    """Where this package keeps ``source``'s compressed copy; it may be absent."""
    return resources.files("dlf.data").joinpath(source.file + PACKED_SUFFIX)


def cache_dir() -> Path:
    """The user cache for downloaded datasets: ``$DLF_CACHE_DIR`` or ``~/.cache/dlf``."""
    env = os.environ.get("DLF_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dlf"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(
    spec: str, data_path: str | os.PathLike | None = None
) -> tuple[Path | Packaged, str | None]:
    """Find a dataset name or path; return ``(location, format)``.

    Order: ``data_path`` if given (any file); for a registered name
    ``$DLF_DATA_DIR/<file>``, then the packaged copy, then the cache, else a
    download into the cache; otherwise ``spec`` itself as a file path.
    ``location`` is a ``Path``, or a ``Packaged`` for the copy inside the package;
    ``read_text`` reads both. ``format`` is the registry's format for a registered
    name and ``None`` for any other file: the caller decides (``load_corpus``
    defaults to ``"lines"``).
    """
    source = DATASETS.get(spec)
    fmt = source.format if source else None
    if data_path is not None:
        path = Path(data_path).expanduser()
        if not path.exists():
            raise DlfError(f"data file {path} does not exist")
        return path, fmt
    if source is not None:
        data_dir = os.environ.get("DLF_DATA_DIR")
        if data_dir:
            candidate = Path(data_dir).expanduser() / source.file
            if candidate.is_file():
                return candidate, fmt
        packed = packaged_file(source)
        if packed.is_file():
            return Packaged(source, packed), fmt
        cached = cache_dir() / source.file
        if cached.is_file():
            return cached, fmt
        return download(source, cache_dir()), fmt
    path = Path(spec).expanduser()
    if path.exists():
        return path, None
    known = ", ".join(sorted(DATASETS))
    raise DlfError(f"unknown dataset {spec!r}: not a known name ({known}) and no such file")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def download(source: Source, dest_dir: str | os.PathLike, timeout: float = 30) -> Path:
    """Download ``source`` into ``dest_dir/<file>``, verify its sha256, return the path.

    The bytes stream into a temp file in ``dest_dir``; only a verified file is
    fsynced and renamed into place, so a failure never leaves a partial dataset.
    """
    dest_dir = Path(dest_dir).expanduser()
    dest = dest_dir / source.file
    hint = f"put the file {source.file} in $DLF_DATA_DIR"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{source.file}.", suffix=".part", dir=dest_dir)
    except OSError as e:
        raise DlfError(f"could not create {source.file} in {dest_dir}: {e.strerror or e}; {hint}")
    tmp = Path(tmp_name)
    try:
        log.info("downloading %s from %s", source.name, source.url)
        digest = hashlib.sha256()
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(source.url, timeout=timeout) as response,
            ):
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, http.client.HTTPException, ValueError) as e:
            reason = _reason(e)
            raise DlfError(
                f"could not download {source.name} from {source.url}: {reason}; {hint}"
            ) from None
        actual = digest.hexdigest()
        if actual != source.sha256:
            raise DlfError(
                f"downloaded {source.file} from {source.url} has sha256 {actual}, "
                f"expected {source.sha256}; the partial file was deleted"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def unpack(packed: Packaged) -> bytes:
    """The plain bytes of a packaged copy, checked against the registry's sha256."""
    source = packed.source
    hint = f"reinstall dlf or put the file {source.file} in $DLF_DATA_DIR"
    try:
        raw = lzma.decompress(packed.resource.read_bytes())
    except (OSError, lzma.LZMAError) as e:
        raise DlfError(f"could not read the {packed}: {e}; {hint}") from None
    actual = hashlib.sha256(raw).hexdigest()
    if actual != source.sha256:
        raise DlfError(
            f"the {packed} has sha256 {actual}, expected {source.sha256}; {hint}"
        )
    return raw


def _read_bytes(location: str | os.PathLike | Packaged) -> bytes:
    if isinstance(location, Packaged):
        return unpack(location)
    path = Path(location)
    if not path.exists():
        raise DlfError(f"data file {path} does not exist")
    if path.is_dir():
        raise DlfError(f"data file {path} is a directory, not a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DlfError(f"could not read {path}: {e.strerror or e}") from None


def read_text(location: str | os.PathLike | Packaged) -> str:
    """The text of a UTF-8 file or of a packaged copy, validated the same way.

    ``\\r\\n`` becomes ``\\n`` and a leading BOM is dropped. Raises ``DlfError`` for a
    missing file, a directory, a packaged copy that does not match its sha256,
    binary content (NUL bytes), invalid UTF-8 (naming the byte offset) and an empty
    or whitespace-only file.
    """
    raw = _read_bytes(location)
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DlfError(f"{location} looks binary (NUL byte at offset {nul}); expected UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 1].hex()
        raise DlfError(
            f"{location} is not UTF-8 text: invalid byte 0x{bad} at byte offset {e.start}"
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not text.strip():
        what = "empty" if not text else "whitespace only"
        raise DlfError(f"{location} is {what}; expected text")
    return text


def load_lines(text: str) -> list[str]:
    """One item per line: each line stripped, blank lines dropped."""
    return [line for line in (raw.strip() for raw in text.split("\n")) if line]


def load_corpus(
    spec: str, data_path: str | os.PathLike | None = None, format: str | None = None
) -> tuple[list[str] | str, str]:
    """Resolve and read a dataset; return ``(items, format)``.

    ``items`` is a ``list[str]`` for ``"lines"`` and one ``str`` for ``"text"``.
    ``format`` wins over the registry's; an unregistered file defaults to ``"lines"``.
    """
    if format is not None and format not in FORMATS:
        raise DlfError(f"unknown data format {format!r}; use 'lines' or 'text'")
    location, registry_format = resolve(spec, data_path)
    fmt = format or registry_format or "lines"
    text = read_text(location)
    if fmt == "text":
        return text, fmt
    lines = load_lines(text)
    if len(lines) < MIN_LINES:
        noun = "line" if len(lines) == 1 else "lines"
        raise DlfError(
            f"{location} has {len(lines)} {noun}; a lines dataset needs at least {MIN_LINES}"
        )
    return lines, fmt
