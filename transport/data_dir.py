"""The data folder: private to the user the server runs as.

It holds the SQLite database (private rooms' history), the generated JWT
secret and the generated metrics token, so on a shared host nobody else may
list or read it: the folder is 0700 and every file the server writes there
is 0600 (each writer creates its file so; see `transport/auth.py` and
`backends/sqlite.py`). A folder left looser by an older version or by hand
is tightened at start.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["make_private"]


def make_private(data_dir: Path) -> None:
    """Create `data_dir` as 0700, or take group and other access away from
    an existing one; a folder this user does not own is left as it is,
    with a warning."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = data_dir.stat().st_mode
    if mode & 0o077:
        try:
            data_dir.chmod(0o700)
        except PermissionError:
            log.warning("%s is readable by others and cannot be made private", data_dir)
