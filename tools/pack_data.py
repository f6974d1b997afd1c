"""Regenerate the packaged copies of the data sets from their plain files.

    python tools/pack_data.py DIR      # DIR holds names.txt, tinyshakespeare.txt

Each plain file is checked against the registry's sha256 first, then written
xz-compressed to src/dlf/data/<file>.xz (what ``dlf.data.sources`` reads).
Only the compressed copies are committed, never the plain files.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dlf.data.sources import DATASETS, PACKED_SUFFIX

DEST = ROOT / "src" / "dlf" / "data"
# The strongest xz preset: ~0.45 MB for both files instead of ~0.54 MB with gzip -9.
PRESET = 9 | lzma.PRESET_EXTREME


def pack(plain: Path) -> Path:
    source = next((s for s in DATASETS.values() if s.file == plain.name), None)
    if source is None:
        known = ", ".join(s.file for s in DATASETS.values())
        sys.exit(f"{plain}: not a registered data file ({known})")
    raw = plain.read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != source.sha256:
        sys.exit(f"{plain} has sha256 {actual}, expected {source.sha256}")
    dest = DEST / (source.file + PACKED_SUFFIX)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=DEST)
    with os.fdopen(fd, "wb") as out:
        out.write(lzma.compress(raw, preset=PRESET))
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
    os.replace(tmp, dest)
    return dest


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit(__doc__)
    src = Path(argv[0])
    for source in DATASETS.values():
        dest = pack(src / source.file)
        print(f"{dest.relative_to(ROOT)}: {dest.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
