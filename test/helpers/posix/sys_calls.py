"""
System-call helpers for the POSIX conformance runner (run.py): what Node's fs lacks
(utimensat with UTIME_NOW/UTIME_OMIT, renameat2 flags, mknod of any type), running a step as an
unprivileged uid in a forked child, and the normalized view of a stat.
"""
import ctypes
import ctypes.util
import errno
import json
import os
import stat
import time

libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# Linux's coarse realtime clock (what file systems stamp times with); Python does not name it.
CLOCK_REALTIME_COARSE = 5

# The unprivileged caller: a uid and gid with no entry in /etc/passwd, and no supplementary groups.
USER = 1234
OTHER = 4321


class Timespec(ctypes.Structure):
    _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]


def _check(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def utimensat(path, atime, mtime, follow=True):
    """atime/mtime: (sec, nsec), 'now' or 'omit'."""
    def ts(v):
        if v == 'now':
            return Timespec(0, UTIME_NOW)
        if v == 'omit':
            return Timespec(0, UTIME_OMIT)
        return Timespec(v[0], v[1])
    times = (Timespec * 2)(ts(atime), ts(mtime))
    _check(libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0 if follow else AT_SYMLINK_NOFOLLOW))


def lchmod(path, mode):
    """fchmodat(AT_SYMLINK_NOFOLLOW): Linux cannot change a symlink's mode (glibc: EOPNOTSUPP)."""
    _check(libc.fchmodat(AT_FDCWD, os.fsencode(path), mode, AT_SYMLINK_NOFOLLOW))


libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
FALLOC = {'0': 0, 'KEEP_SIZE': 1, 'PUNCH_HOLE': 2, 'PUNCH_HOLE|KEEP_SIZE': 3, 'COLLAPSE_RANGE': 8,
          'ZERO_RANGE': 0x10, 'ZERO_RANGE|KEEP_SIZE': 0x11, 'INSERT_RANGE': 0x20}


def fallocate(fd, mode, offset, length):
    _check(libc.fallocate(fd, FALLOC[mode], offset, length))


def renameat2(src, dst, flags):
    _check(libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags))


def outcome(fn, *args, **kw):
    """'OK', or the errno name the call failed with."""
    try:
        fn(*args, **kw)
        return 'OK'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def as_user(fn, failure=None, uid=USER, gid=USER):
    """
    Runs fn() in a forked child that has dropped to uid/gid (no groups); returns its outcome, or
    with failure='raise' raises the OSError it failed with.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            res = outcome(fn)
            os.write(w, json.dumps(res).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    res = json.loads(b''.join(chunks) or b'"CHILD-FAILED"')
    if failure == 'raise' and res != 'OK':
        code = getattr(errno, res, errno.EIO)
        raise OSError(code, os.strerror(code))
    return res


TYPES = {stat.S_IFREG: 'reg', stat.S_IFDIR: 'dir', stat.S_IFLNK: 'symlink', stat.S_IFIFO: 'fifo',
         stat.S_IFSOCK: 'socket', stat.S_IFCHR: 'chr', stat.S_IFBLK: 'blk'}


def view(path, follow=False):
    """
    The stat fields both file systems must agree on. Left out, each for a reason:
    - st_ino, st_dev: numbers of the file system's own (hard-link identity is compared instead,
      by `same_inode`);
    - atime, mtime, ctime: absolute clock values differ between any two runs (they are compared
      as changed/unchanged around an operation, or exactly where the test set them);
    - st_size and st_blocks of a directory: ext4 reports allocated directory blocks (4096, ...),
      reef the number of entries; st_blocks and st_blksize of anything: allocation is the file
      system's own business (reef's blocks follow its chunk tree, not ext4's extents).
    """
    try:
        s = os.stat(path, follow_symlinks=follow)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    v = {'type': TYPES.get(stat.S_IFMT(s.st_mode), oct(stat.S_IFMT(s.st_mode))),
         'mode': oct(stat.S_IMODE(s.st_mode)), 'nlink': s.st_nlink, 'uid': s.st_uid, 'gid': s.st_gid,
         'rdev': '%d,%d' % (os.major(s.st_rdev), os.minor(s.st_rdev))}
    if not stat.S_ISDIR(s.st_mode):
        v['size'] = s.st_size
    return v


def times(path, follow=False):
    s = os.stat(path, follow_symlinks=follow)
    return (s.st_atime_ns, s.st_mtime_ns, s.st_ctime_ns)


def same_inode(a, b):
    return os.lstat(a).st_ino == os.lstat(b).st_ino


def tick(*paths):
    """
    Waits (bounded) until the coarse clock both file systems stamp times with has passed every
    time on `paths`, so an operation right after leaves a time that differs if it changed it.
    """
    latest = 0
    for p in paths:
        try:
            latest = max(latest, *times(p))
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= latest + 1_000_000:
        if time.monotonic() > deadline:
            raise RuntimeError('the clock did not advance')
        time.sleep(0.001)


def changes(before, after):
    """Which of atime/mtime/ctime changed: e.g. 'm c' (atime is left out: relatime)."""
    names = [n for n, b, a in zip(('a', 'm', 'c'), before, after) if b != a and n != 'a']
    return ' '.join(names) or 'none'
