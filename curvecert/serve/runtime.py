"""Who answers on ipc: runtime-directory checks and the daemon's pinned public key.

Why: a forwarder sends PLAIN passwords and client keys to whatever listens at the daemon's
socket path, and admits whoever that listener says. If another local user can create the
socket's directory first, replace the socket in it, or bind the path while the daemon
restarts, they impersonate the daemon. Two fences, as ssh-agent and tmux do for theirs:

- **The directory.** The daemon and the forwarder refuse a socket directory that is not a
  real directory owned by an expected user, or that group or others can write to
  (`check_directory`); the socket file itself must be a socket owned by an expected user.
  The daemon creates a missing directory 0700 (0750 with `--ipc-group`).
- **The key.** The daemon's ipc socket is a CURVE server. It writes its public key,
  40 Z85 characters, next to the socket as `PATH.pub` (`publish_key`, 0644, or 0640 for
  the ipc group); the forwarder reads it from the checked directory (`read_key`) or is
  given it (`server_key=`), and pins it. A listener without the daemon's secret key cannot
  complete the handshake, so it never sees a request.

Expected owners: the daemon requires its own effective uid. The forwarder accepts its own
uid and root (a root daemon serving an `--ipc-group`), plus a uid it is told about.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection

from curvecert.certs import fileio, keys
from curvecert.errors import OperationalError
from curvecert.formats import z85

__all__ = ["KEY_SUFFIX", "check_directory", "check_socket", "default_owners", "key_path",
           "publish_key", "read_key", "remove_key"]

#: The daemon's public key file is the socket path plus this suffix.
KEY_SUFFIX = ".pub"
_KEY_LEN = 40


def default_owners() -> frozenset[int]:
    """Owners a forwarder accepts without being told: itself and root."""
    return frozenset({os.geteuid(), 0})


def key_path(socket_path: str) -> str:
    """Where the daemon publishes its public key for `socket_path`."""
    return socket_path + KEY_SUFFIX


def _owner_text(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def check_directory(directory: str, owners: Collection[int]) -> None:
    """Refuse `directory` unless it is a directory (not a link) owned by one of `owners`
    and not writable by group or others.

    Raises `OperationalError` naming the directory and what is wrong (exit 3).
    """
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        raise OperationalError(f"{directory}: the socket directory does not exist") from None
    except OSError as exc:
        raise OperationalError(f"{directory}: cannot inspect the socket directory: "
                               f"{exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise OperationalError(f"{directory}: the socket directory is not a directory "
                               "(a symbolic link or a file); refusing it")
    if st.st_uid not in owners:
        raise OperationalError(
            f"{directory}: the socket directory is owned by {_owner_text(st.st_uid)}, not by "
            f"{' or '.join(_owner_text(u) for u in sorted(owners))}; refusing it (another "
            "user could impersonate the daemon)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OperationalError(
            f"{directory}: the socket directory is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); refusing it (another user could replace the "
            f"socket); run: chmod go-w {directory}")


def check_socket(path: str, owners: Collection[int]) -> bool:
    """True if a socket file owned by one of `owners` is at `path`, False if nothing is.

    Raises `OperationalError` when something else is there, or a socket of another owner.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OperationalError(f"{path}: cannot inspect the socket: {exc.strerror}") from exc
    if not stat.S_ISSOCK(st.st_mode):
        raise OperationalError(f"{path}: exists and is not a socket; refusing it")
    if st.st_uid not in owners:
        raise OperationalError(f"{path}: the socket is owned by {_owner_text(st.st_uid)}; "
                               "refusing it (not the daemon)")
    return True


def publish_key(socket_path: str, public_key: bytes, *, gid: int | None = None) -> None:
    """Write the daemon's public key (Z85) next to its socket, atomically.

    Mode 0644, or 0640 with group `gid`. Raises `OperationalError` on I/O failure.
    """
    path = key_path(socket_path)
    data = (z85.encode(public_key) + "\n").encode("ascii")
    fileio.atomic_write(path, data, mode=0o640 if gid is not None else 0o644, overwrite=True)
    if gid is not None:
        try:
            os.chown(path, -1, gid)
        except OSError as exc:
            raise OperationalError(f"{path}: cannot give the key file to the ipc group: "
                                   f"{exc.strerror}") from exc


def remove_key(socket_path: str, public_key: bytes) -> None:
    """Remove the key file if it still holds `public_key` (a newer daemon's stays)."""
    path = key_path(socket_path)
    try:
        if read_key(socket_path, {os.geteuid()}) == public_key:
            os.unlink(path)
    except (OperationalError, OSError):
        pass


def read_key(socket_path: str, owners: Collection[int]) -> bytes:
    """The daemon's public key published next to `socket_path`, checked like the socket.

    Raises `OperationalError` when the file is missing (the daemon is not up yet), not a
    regular file owned by one of `owners`, writable by group/others, or not a key.
    """
    path = key_path(socket_path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise OperationalError(f"{path}: no daemon key yet (is serve-auth running?)") from None
    except OSError as exc:
        raise OperationalError(f"{path}: cannot inspect the daemon key: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in owners \
            or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OperationalError(f"{path}: the daemon key is not a regular file owned by the "
                               "daemon's user and writable only by it; refusing it")
    text = fileio.read_bytes(path, limit=256, what="a daemon key").decode("ascii", "replace")
    return keys.decode_key(text.strip()[:_KEY_LEN + 1], what=f"{path}: daemon key")
