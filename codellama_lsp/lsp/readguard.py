"""Which files a request may make the server read from disk.

Why: LSP lets a client name any URI; pygls answers an unknown one by reading the file from disk. A
request for ``file:///etc/passwd`` (or ``file:///project/../../home/u/.ssh/id_rsa``, or a symlink in
the project pointing out of it) must not pull that file into a prompt. So a document the editor has
not opened is read from disk only when its real path lies inside a workspace folder and is not a
secret file (key files, ``.env``...). Documents the editor opened carry their own text and are not
affected.
"""

from __future__ import annotations

import os


def _roots(workspace) -> list[str]:
    from pygls.uris import to_fs_path

    roots = []
    for folder in getattr(workspace, "folders", {}).values():
        path = to_fs_path(folder.uri)
        if path:
            roots.append(path)
    if getattr(workspace, "root_path", None):
        roots.append(workspace.root_path)
    return [os.path.realpath(r) for r in roots]


def disk_read_refusal(path: str, workspace) -> str | None:
    """Why ``path`` must not be read for a request (None when it may be)."""
    if "\0" in path:  # no file has such a name; os.path.realpath would raise ValueError
        return "not a valid file path"
    real = os.path.realpath(path)
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in _roots(workspace)):
        return "outside the workspace folders"
    from ..context.workspace import is_secret_path

    if is_secret_path(real):
        return "a secret file"
    return None
