"""Snapshots of a sandbox's Wazo files, to prove a failed deployment left them byte-identical."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

# Runtime and bookkeeping, not Wazo configuration: pid files, logs, the sandbox's own state,
# and certbot-wazo's undo log (compared separately where it matters).
EXCLUDED = ("run", "var/log", "var/lib/sandbox", "var/lib/nginx", "var/lib/certbot-wazo", "tmp")

Tree = dict[str, tuple[str, int, int, int, str]]


def snapshot(root: Path, excluded: tuple[str, ...] = EXCLUDED) -> Tree:
    """Every path under root (but the excluded ones): kind, mode, owner, group, content hash."""
    found: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames
                       if os.path.normpath(os.path.join(rel_dir, d)) not in excluded]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                detail, kind = os.readlink(path), "link"
            elif stat.S_ISDIR(st.st_mode):
                detail, kind = "", "dir"
            else:
                detail, kind = hashlib.sha256(path.read_bytes()).hexdigest(), "file"
            found[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail)
    return found


def differences(before: Tree, after: Tree) -> list[str]:
    """Human-readable differences between two snapshots (empty when identical)."""
    changed = [f"changed {p}" for p in before if p in after and before[p] != after[p]]
    return (changed + [f"removed {p}" for p in before if p not in after]
            + [f"added {p}" for p in after if p not in before])
