"""The head-side half of the result puller: a standard-library script, nothing installed.

``client/sync.py`` sends this file's text over the command channel and runs it with the
head's own python (``python -I -S -c <this script> pull``), once per pull. It must run on any
Python 3.8+ with no third-party package, so it imports nothing from tether; the laptop side
imports its pure helpers (``rule_matcher``) to apply the same rules.

The conversation, on the command's stdin and stdout:

1. The laptop sends the manifest request (every request is ``<length>\\n`` then that many bytes
   of zlib-compressed JSON): ``{"root", "include", "exclude", "max_bytes", "known"}``, where
   ``known`` is ``[[path, size, mtime_ns], ...]`` for what it holds.
2. The agent walks ``root`` with ``os.scandir``, lstat only (a symlink is never followed), and
   prints one ASCII JSON line per entry the laptop needs to hear about:

   - ``{"p": path, "s": size, "m": mtime_ns}``: an included regular file that is new or whose
     size or mtime changed. ``"h": sha256`` is added only when the size is the one the laptop
     knows and the mtime is not (the only case where the content may be the same); those are
     the only files this step opens.
   - ``{"p": path, "t": kind}``: a symlink, fifo, socket or device (never followed or opened).
   - ``{"p": path, "big": size}``: an included file over ``max_bytes`` (never opened).
   - ``{"p": path, "err": text}``: a folder that could not be listed.
   - ``{"gone": path}`` / ``{"drop": path}``: a known path that no longer exists / that is no
     longer an included regular file.
   - last, ``{"end": {"files": n, "unchanged": n}}``; or only ``{"error": "missing"|"notdir",
     "root": path}`` when the root is not a folder.

   Files excluded by name (include/exclude globs) or by size are decided from the name and
   the lstat size alone: they are never opened or read.
3. The laptop sends ``{"files": [[path, size, mtime_ns], ...]}`` (the new and changed files it
   wants), or closes stdin when it wants nothing. A file that grew past the laptop's intact
   copy is asked for as ``[path, size, mtime_ns, offset, sha256]``: ``offset`` is the size of
   that copy, ``sha256`` its hash.
4. The agent streams them in that order, each either a skip line ``{"skip": path, "reason":
   text}`` or a frame::

       {"f": path, "n": size}\\n   <size raw bytes>   {"h": sha256, "ok": true|false}\\n

   The file is opened without following a symlink (in its folders either), checked to still
   have the manifest's size and mtime (else skipped as ``changing``), streamed in 1 MiB chunks
   while hashed, and checked again with fstat at the end: ``"ok": false`` means it changed
   while it was read (a short read is padded with zeros so the framing holds). For an entry
   with an offset the agent first hashes the file's first ``offset`` bytes: when they match
   ``sha256`` the frame is the tail only, ``{"f": path, "n": size - offset, "o": offset}``,
   and its trailer still carries the sha256 of the whole file (prefix and tail); when they do
   not, the whole file is sent as above. Last line: ``{"end": n}``.
"""

import errno
import hashlib
import json
import os
import re
import stat
import sys
import zlib
from fnmatch import translate

CHUNK = 1 << 20
_O_READ = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a fifo swapped in must not block the open
    | getattr(os, "O_CLOEXEC", 0)
)
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_KINDS = (
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISDIR, "folder"),
)


def rule_matcher(patterns):
    """A ``match(name, relpath) -> bool`` for glob ``patterns``: a pattern with a ``/`` is
    matched against the path relative to the root, any other against the file name."""
    by_name = [translate(p) for p in patterns if "/" not in p]
    by_path = [translate(p) for p in patterns if "/" in p]
    name_re = re.compile("|".join(by_name)).match if by_name else None
    path_re = re.compile("|".join(by_path)).match if by_path else None

    def match(name, rel):
        return bool(
            (name_re is not None and name_re(name)) or (path_re is not None and path_re(rel))
        )

    return match


def kind_of(mode):
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "special file"


def _same(st, size, mtime_ns):
    return st.st_size == size and st.st_mtime_ns == mtime_ns


def _quote(text):
    return json.dumps(text).encode("ascii")


class _Out:
    """Buffered writes to stdout (fd 1)."""

    def __init__(self):
        self.f = open(1, "wb", buffering=CHUNK, closefd=False)  # noqa: SIM115
        self.write = self.f.write

    def line(self, obj):
        self.write(json.dumps(obj, separators=(",", ":")).encode("ascii") + b"\n")


def _hash_if_same(path, size, mtime_ns):
    """sha256 of the file at ``path`` if it still has ``size``/``mtime_ns`` before and after
    reading it; None when it changed or cannot be read."""
    try:
        fd = os.open(path, _O_READ)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _same(st, size, mtime_ns):
            return None
        h = hashlib.sha256()
        while True:
            block = os.read(fd, CHUNK)
            if not block:
                break
            h.update(block)
        return h.hexdigest() if _same(os.fstat(fd), size, mtime_ns) else None
    except OSError:
        return None
    finally:
        os.close(fd)


def manifest(req, out):
    root = req["root"]
    include = rule_matcher(req["include"])
    exclude = rule_matcher(req["exclude"])
    max_bytes = req["max_bytes"]
    known = {k[0]: (k[1], k[2]) for k in req["known"]}
    files = unchanged = 0
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError as exc:
            out.line({"p": prefix[:-1] or ".", "err": exc.strerror or str(exc)})
            continue
        with entries:
            for entry in entries:
                name = entry.name
                rel = prefix + name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not exclude(name, rel):
                            stack.append((rel + "/", entry.path))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        if not exclude(name, rel):
                            kind = kind_of(entry.stat(follow_symlinks=False).st_mode)
                            out.line({"p": rel, "t": kind})
                        continue
                    if not include(name, rel) or exclude(name, rel):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we listed its folder
                size, mtime_ns = st.st_size, st.st_mtime_ns
                have = known.pop(rel, None)
                if size > max_bytes:
                    out.line({"p": rel, "big": size})
                    continue
                files += 1
                if have is not None and have[0] == size and have[1] == mtime_ns:
                    unchanged += 1
                    continue
                line = b'{"p":%s,"s":%d,"m":%d' % (_quote(rel), size, mtime_ns)
                if have is not None and have[0] == size:
                    digest = _hash_if_same(entry.path, size, mtime_ns)
                    if digest is not None:
                        line += b',"h":"%s"' % digest.encode("ascii")
                out.write(line + b"}\n")
    for rel in sorted(known):
        try:
            os.lstat(os.path.join(root, rel))
        except FileNotFoundError:
            out.line({"gone": rel})
        except OSError:
            out.line({"drop": rel})  # NotADirectoryError and friends: not a file there now
        else:
            out.line({"drop": rel})
    out.line({"end": {"files": files, "unchanged": unchanged}})


class _Folders:
    """Opens files below ``root`` without following a symlink anywhere on the way, keeping the
    last folder open (requests come sorted, so neighbours share it)."""

    def __init__(self, root):
        self.root_path = root
        self.root = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        self.rel = None
        self.fd = None
        self.dir_fd = os.open in os.supports_dir_fd

    def _folder(self, rel):
        if rel == "":
            return self.root
        if rel == self.rel:
            return self.fd
        fd = os.open(rel.split("/")[0], _O_DIR, dir_fd=self.root)
        try:
            for part in rel.split("/")[1:]:
                child = os.open(part, _O_DIR, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError:
            os.close(fd)
            raise
        if self.fd is not None:
            os.close(self.fd)
        self.rel, self.fd = rel, fd
        return fd

    def open(self, path):
        folder, _, name = path.rpartition("/")
        if not name or any(p in ("", ".", "..") for p in path.split("/")):
            raise OSError(errno.EINVAL, "not a plain relative path")
        if not self.dir_fd:
            return os.open(os.path.join(self.root_path, path), _O_READ)
        return os.open(name, _O_READ, dir_fd=self._folder(folder))


def _skip_reason(exc):
    if exc.errno == errno.ENOENT:
        return "vanished"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
        return "not a regular file any more"
    return "unreadable: " + (exc.strerror or str(exc))


def _read_prefix(fd, offset, h):
    """Hash the first ``offset`` bytes of ``fd`` into ``h``; False when they cannot be read."""
    left = offset
    while left:
        try:
            block = os.read(fd, min(CHUNK, left))
        except OSError:
            return False
        if not block:
            return False
        h.update(block)
        left -= len(block)
    return True


def _frame_start(fd, path, size, item, out):
    """The hasher of the frame about to be sent, after writing its header: a tail frame
    (``"o"``) when the laptop asked from an offset and the first ``offset`` bytes hash to the
    sha256 it holds (it then hashes on over the tail, to the whole file's sha256); else the
    whole file, from its start."""
    h = hashlib.sha256()
    offset = item[3] if len(item) >= 5 else 0
    if 0 < offset < size and _read_prefix(fd, offset, h) and h.hexdigest() == item[4]:
        out.write(b'{"f":%s,"n":%d,"o":%d}\n' % (_quote(path), size - offset, offset))
        return h, size - offset
    if offset:
        os.lseek(fd, 0, os.SEEK_SET)
        h = hashlib.sha256()
    out.write(b'{"f":%s,"n":%d}\n' % (_quote(path), size))
    return h, size


def _send_one(fd, path, size, mtime_ns, item, out, zeros):
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        out.line({"skip": path, "reason": "not a regular file any more"})
        return False
    if not _same(st, size, mtime_ns):
        out.line({"skip": path, "reason": "changing"})
        return False
    h, left = _frame_start(fd, path, size, item, out)
    while left:
        try:
            block = os.read(fd, min(CHUNK, left))
        except OSError:
            block = b""
        if not block:
            break
        h.update(block)
        out.write(block)
        left -= len(block)
    ok = left == 0
    while left:  # the file shrank under us: keep the framing, flag the frame
        out.write(zeros[: min(CHUNK, left)])
        left -= min(CHUNK, left)
    ok = ok and _same(os.fstat(fd), size, mtime_ns)
    out.write(b'{"h":"%s","ok":%s}\n' % (h.hexdigest().encode(), b"true" if ok else b"false"))
    return True


def send(req, out):
    folders = _Folders(req["root"])
    zeros = bytes(CHUNK)
    sent = 0
    for item in req["files"]:
        path, size, mtime_ns = item[0], item[1], item[2]
        try:
            fd = folders.open(path)
        except OSError as exc:
            out.line({"skip": path, "reason": _skip_reason(exc)})
            continue
        try:
            sent += _send_one(fd, path, size, mtime_ns, item, out, zeros)
        finally:
            os.close(fd)
    out.line({"end": sent})


def read_message(stream):
    """One request from the laptop: ``<length>\\n`` then that many bytes of zlib-compressed
    JSON. None when the laptop closed stdin instead (nothing more to do)."""
    header = stream.readline()
    if not header.strip():
        return None
    data = stream.read(int(header))
    return json.loads(zlib.decompress(data))


def main(argv):
    stdin = sys.stdin.buffer
    out = _Out()
    req = read_message(stdin)
    if req is None:
        return
    root = os.path.expanduser(req["root"])
    req["root"] = root
    try:
        st = os.stat(root)
    except OSError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode):
        out.line({"error": "missing" if st is None else "notdir", "root": root})
        out.f.flush()
        return
    manifest(req, out)
    out.f.flush()  # the laptop answers with the files it wants, after reading all of this
    req = read_message(stdin)
    if req is not None:
        send({"root": root, "files": req["files"]}, out)
        out.f.flush()


if __name__ == "__main__":
    try:
        main(sys.argv)
    except BrokenPipeError:  # the laptop hung up (stopped reading): nothing to tell it
        os._exit(1)
