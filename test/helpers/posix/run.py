#!/usr/bin/env python3
"""
reef's own POSIX conformance cases. Runs every case in a fresh directory under DIR and prints one
JSON line per case, {"id": ..., "out": ...}: the outcome of each step (OK or the errno name) and
the normalized stat fields it observed (sys_calls.view says what is left out and why). The same run on
local disk and on a reef mount must print the same lines (test/posix-conformance.test.ts).

    python3 run.py DIR [ID-PREFIX...]   run the cases (all, or those whose id starts so)
    python3 run.py --tree DIR           list every entry under DIR with what must persist
    python3 run.py --refused DIR        steps that must all fail (DIR holds f, d/ and d/x)

Runs as root: some steps drop to an unprivileged uid in a forked child (sys_calls.as_user).
"""
import hashlib
import json
import os
import socket
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sys_calls import (OTHER, RENAME_EXCHANGE, RENAME_NOREPLACE, USER, as_user, changes, fallocate, lchmod, libc,  # noqa: E402
                       outcome, renameat2, same_inode, tick, times, utimensat, view)

KINDS = ['reg', 'dir', 'symlink', 'fifo', 'socket', 'chr', 'blk']
NON_DIRS = [k for k in KINDS if k != 'dir']
# Device numbers: /dev/null's, and a block device number with a large minor.
DEVS = {'chr': os.makedev(1, 3), 'blk': os.makedev(7, 70000)}
CASES = []


def case(cid):
    def deco(fn):
        CASES.append((cid, fn))
        return fn
    return deco


def make(kind, p, mode=0o644):
    """Creates an entry of `kind` at p with the caller's credentials (and the umask)."""
    if kind == 'reg':
        os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
    elif kind == 'dir':
        os.mkdir(p, mode | 0o111)
    elif kind == 'symlink':
        os.symlink('target-of-' + os.path.basename(p), p)
    elif kind == 'fifo':
        os.mkfifo(p, mode)
    elif kind == 'socket':
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(p)
        finally:
            s.close()
    else:
        os.mknod(p, mode | (stat.S_IFCHR if kind == 'chr' else stat.S_IFBLK), DEVS[kind])


def nofollow(kind):
    return kind == 'symlink'


def open_dir(d, mode=0o777):
    os.chmod(d, mode)
    return d


# ---- create and stat, for every kind ------------------------------------------------------

for _k in KINDS:
    @case(f'{_k}/create')
    def _create(d, k=_k):
        p = os.path.join(d, 'x')
        before = times(d)
        tick(d)
        out = {'create': outcome(make, k, p), 'stat': view(p), 'again': outcome(make, k, p)}
        out['parent'] = changes(before, times(d))
        return out

    @case(f'{_k}/create-as-user')
    def _create_user(d, k=_k):
        open_dir(d)
        p = os.path.join(d, 'u')
        return {'create': as_user(lambda: make(k, p)), 'stat': view(p)}


# ---- chmod and chown as root, as the owner and as someone else ------------------------------

for _k in NON_DIRS + ['dir']:
    @case(f'{_k}/chmod')
    def _chmod(d, k=_k):
        p = os.path.join(d, 'x')
        make(k, p)
        follow = not nofollow(k)
        out = {}
        before = times(p, follow)
        tick(p)
        for mode in (0o7777, 0o1750, 0o2711, 0o4500, 0):
            if k == 'symlink':
                # chmod follows a symlink; Linux has no lchmod.
                out['lchmod'] = outcome(lchmod, p, mode)
                break
            out[oct(mode)] = [outcome(os.chmod, p, mode), view(p)['mode']]
        out['times'] = changes(before, times(p, follow))
        if k != 'symlink':
            os.chmod(p, 0o644)
            out['non-owner'] = as_user(lambda: os.chmod(p, 0o777))
            os.chown(p, USER, 0)
            out['owner'] = as_user(lambda: os.chmod(p, 0o640))
            # The owner is not in the file's group: the kernel drops the setgid bit it asks for.
            out['owner-sgid-not-in-group'] = [as_user(lambda: os.chmod(p, 0o2755)), view(p)['mode']]
            out['owner-suid'] = [as_user(lambda: os.chmod(p, 0o4755)), view(p)['mode']]
        return out

    @case(f'{_k}/chown')
    def _chown(d, k=_k):
        p = os.path.join(d, 'x')
        make(k, p)
        follow = not nofollow(k)
        out = {}
        before = times(p)
        tick(p)
        out['root'] = outcome(os.chown, p, USER, OTHER, follow_symlinks=follow)
        out['stat'] = view(p)
        out['times'] = changes(before, times(p))
        before = times(p)
        tick(p)
        out['root -1 -1'] = outcome(os.chown, p, -1, -1, follow_symlinks=follow)
        out['times -1 -1'] = changes(before, times(p))
        os.chown(p, 0, 0, follow_symlinks=follow)
        out['non-owner'] = as_user(lambda: os.chown(p, USER, USER, follow_symlinks=follow))
        os.chown(p, USER, 0, follow_symlinks=follow)
        out['owner to other uid'] = as_user(lambda: os.chown(p, OTHER, -1, follow_symlinks=follow))
        out['owner to a group not its own'] = as_user(lambda: os.chown(p, -1, OTHER, follow_symlinks=follow))
        out['owner to its own group'] = as_user(lambda: os.chown(p, -1, USER, follow_symlinks=follow))
        out['after'] = view(p)
        return out

for _k in ['reg', 'dir']:
    @case(f'{_k}/chown-clears-setid')
    def _chown_setid(d, k=_k):
        p = os.path.join(d, 'x')
        make(k, p)
        os.chmod(p, 0o6755)
        out = {'root chown': [outcome(os.chown, p, USER, USER), view(p)['mode']]}
        os.chmod(p, 0o6755)
        out['owner chown'] = [as_user(lambda: os.chown(p, -1, USER)), view(p)['mode']]
        return out


# ---- utimensat: explicit, UTIME_NOW, UTIME_OMIT; as owner and not ---------------------------

for _k in KINDS:
    @case(f'{_k}/utimens')
    def _utimens(d, k=_k):
        p = os.path.join(d, 'x')
        make(k, p, 0o666)
        follow = not nofollow(k)
        out = {}

        def step(name, a, m):
            before = times(p)
            tick(p)
            r = outcome(utimensat, p, a, m, follow)
            after = times(p)
            # Times the call set are compared exactly; others only as changed or not.
            exact = [t for t, v in zip(after[:2], (a, m)) if isinstance(v, tuple)]
            out[name] = [r, changes(before, after), exact, 'atime ' + ('same' if after[0] == before[0] else 'changed')]

        step('both explicit', (1000000000, 123456789), (1500000000, 987654321))
        step('atime omit', 'omit', (1600000000, 5))
        step('mtime omit', (1700000000, 7), 'omit')
        step('both omit', 'omit', 'omit')
        step('mtime now', 'omit', 'now')
        step('both now', 'now', 'now')
        os.chmod(p, 0o666, follow_symlinks=follow) if k != 'symlink' else None
        if k == 'dir':
            os.chmod(p, 0o777)
        out['non-owner explicit'] = as_user(lambda: utimensat(p, (1, 0), (2, 0), follow))
        out['non-owner now, writable'] = as_user(lambda: utimensat(p, 'now', 'now', follow))
        if k != 'symlink':
            os.chmod(p, 0o644)
            out['non-owner now, not writable'] = as_user(lambda: utimensat(p, 'now', 'now', follow))
        os.chown(p, USER, USER, follow_symlinks=follow)
        out['owner explicit'] = as_user(lambda: utimensat(p, (3, 0), (4, 0), follow))
        return out


# ---- which operations change mtime and ctime ------------------------------------------------

def time_step(out, name, watch, fn):
    """Runs fn and records, for each watched path, which times it changed."""
    before = [times(w) if os.path.lexists(w) else None for w in watch]
    tick(*[w for w in watch if os.path.lexists(w)])
    r = outcome(fn)
    after = [times(w) if os.path.lexists(w) else None for w in watch]
    out[name] = [r] + [changes(b, a) if b and a else 'gone' for b, a in zip(before, after)]


@case('times/file-data')
def _times_data(d):
    p = os.path.join(d, 'f')
    with open(p, 'wb') as f:
        f.write(b'x' * 100)
    out = {}

    def write(flags, data, at=None):
        fd = os.open(p, flags)
        try:
            if at is None:
                os.write(fd, data)
            else:
                os.pwrite(fd, data, at)
        finally:
            os.close(fd)
    time_step(out, 'write', [p, d], lambda: write(os.O_WRONLY, b'abc', 10))
    time_step(out, 'write 0 bytes', [p], lambda: write(os.O_WRONLY, b''))
    time_step(out, 'append', [p], lambda: write(os.O_WRONLY | os.O_APPEND, b'tail'))
    time_step(out, 'truncate shorter', [p], lambda: os.truncate(p, 50))
    time_step(out, 'truncate same size', [p], lambda: os.truncate(p, 50))
    time_step(out, 'truncate longer', [p], lambda: os.truncate(p, 5000))
    time_step(out, 'O_TRUNC of a non-empty file', [p], lambda: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)))
    time_step(out, 'O_TRUNC of an empty file', [p], lambda: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)))
    time_step(out, 'open without writing', [p], lambda: os.close(os.open(p, os.O_RDWR)))
    time_step(out, 'read', [p], lambda: open(p, 'rb').read())
    time_step(out, 'setxattr', [p], lambda: os.setxattr(p, 'user.k', b'v'))
    time_step(out, 'removexattr', [p], lambda: os.removexattr(p, 'user.k'))
    out['size'] = view(p)['size']
    return out


for _k in KINDS:
    @case(f'times/{_k}-namespace')
    def _times_ns(d, k=_k):
        a = os.path.join(d, 'a')
        b = os.path.join(d, 'b')
        os.mkdir(a)
        os.mkdir(b)
        x = os.path.join(a, 'x')
        out = {}
        time_step(out, 'create: parent', [a], lambda: make(k, x))
        time_step(out, 'chmod: entry, parent', [x, a], lambda: os.chmod(x, 0o700) if k != 'symlink' else os.chown(x, 5, 5, follow_symlinks=False))
        if k != 'dir':
            time_step(out, 'link: entry, parent', [x, a], lambda: os.link(x, os.path.join(a, 'x2'), follow_symlinks=False))
            time_step(out, 'unlink a link: entry, parent', [x, a], lambda: os.unlink(os.path.join(a, 'x2')))
        time_step(out, 'rename in place: entry, parent', [x, a], lambda: os.rename(x, os.path.join(a, 'y')))
        y = os.path.join(a, 'y')
        z = os.path.join(b, 'z')
        time_step(out, 'rename across: entry, from, to', [y, a, b], lambda: os.rename(y, z))
        make(k, os.path.join(a, 'victim'))
        victim = os.path.join(a, 'victim')
        if k != 'dir':
            os.link(victim, os.path.join(d, 'victim-link'), follow_symlinks=False)
        time_step(out, 'rename over: replaced, from, to', [os.path.join(d, 'victim-link') if k != 'dir' else victim, b, a],
                  lambda: os.rename(z, victim))
        time_step(out, 'remove: parent', [a], lambda: os.rmdir(victim) if k == 'dir' else os.unlink(victim))
        return out


# ---- link, unlink, rename, rmdir and their errnos -------------------------------------------

for _k in NON_DIRS:
    @case(f'{_k}/link')
    def _link(d, k=_k):
        a = os.path.join(d, 'a')
        b = os.path.join(d, 'b')
        sub = os.path.join(d, 'sub')
        os.mkdir(sub)
        make(k, a)
        out = {'link': outcome(os.link, a, b, follow_symlinks=False)}
        out['nlink'] = [view(a)['nlink'], view(b)['nlink']]
        out['same inode'] = same_inode(a, b)
        out['stat of the second name'] = view(b)
        out['again'] = outcome(os.link, a, b, follow_symlinks=False)
        out['third, in a subdir'] = outcome(os.link, b, os.path.join(sub, 'c'), follow_symlinks=False)
        out['chmod through one name'] = outcome(os.chown, b, 77, 88, follow_symlinks=False)
        out['seen through the other'] = view(os.path.join(sub, 'c'))
        out['rename one name'] = outcome(os.rename, a, os.path.join(sub, 'a2'))
        out['unlink another'] = outcome(os.unlink, b)
        out['left'] = [view(os.path.join(sub, 'a2')), view(os.path.join(sub, 'c')), same_inode(os.path.join(sub, 'a2'), os.path.join(sub, 'c'))]
        out['under a missing dir'] = outcome(os.link, os.path.join(sub, 'c'), os.path.join(d, 'none', 'x'), follow_symlinks=False)
        out['under a file'] = outcome(os.link, os.path.join(sub, 'c'), os.path.join(sub, 'c', 'x'), follow_symlinks=False)
        return out


@case('dir/link')
def _link_dir(d):
    a = os.path.join(d, 'a')
    os.mkdir(a)
    return {'link a directory': outcome(os.link, a, os.path.join(d, 'b')), 'nlink': view(a)['nlink']}


@case('unlink/errnos')
def _unlink(d):
    os.mkdir(os.path.join(d, 'dir'))
    make('reg', os.path.join(d, 'f'))
    return {
        'a directory': outcome(os.unlink, os.path.join(d, 'dir')),
        'missing': outcome(os.unlink, os.path.join(d, 'none')),
        'under a file': outcome(os.unlink, os.path.join(d, 'f', 'x')),
        'trailing slash on a file': outcome(os.unlink, os.path.join(d, 'f') + '/'),
        'dangling symlink': [outcome(os.symlink, 'nowhere', os.path.join(d, 's')), outcome(os.unlink, os.path.join(d, 's'))],
    }


@case('rmdir/errnos')
def _rmdir(d):
    full = os.path.join(d, 'full')
    os.mkdir(full)
    make('fifo', os.path.join(full, 'p'))
    os.mkdir(os.path.join(d, 'sub'))
    make('reg', os.path.join(d, 'f'))
    out = {
        'not empty': outcome(os.rmdir, full),
        'a file': outcome(os.rmdir, os.path.join(d, 'f')),
        'a symlink to a dir': [outcome(os.symlink, 'sub', os.path.join(d, 's')), outcome(os.rmdir, os.path.join(d, 's'))],
        'missing': outcome(os.rmdir, os.path.join(d, 'none')),
        'dot': outcome(os.rmdir, os.path.join(d, 'sub', '.')),
        'dotdot': outcome(os.rmdir, os.path.join(d, 'sub', '..')),
        'parent nlink before': view(d)['nlink'],
        'empty': outcome(os.rmdir, os.path.join(d, 'sub')),
        'parent nlink after': view(d)['nlink'],
    }
    os.unlink(os.path.join(full, 'p'))
    out['emptied'] = outcome(os.rmdir, full)
    return out


@case('rename/errnos')
def _rename(d):
    j = lambda *s: os.path.join(d, *s)  # noqa: E731
    for n in ('d1', 'd2', 'full', 'd1/inner'):
        os.mkdir(j(n))
    make('reg', j('full', 'f'))
    for n in ('f1', 'f2'):
        make('reg', j(n))
    make('fifo', j('p'))
    os.link(j('f1'), j('f1-link'))
    return {
        'file over file': [outcome(os.rename, j('f2'), j('f1')), view(j('f1-link'))['nlink']],
        'file over a directory': outcome(os.rename, j('f1'), j('d2')),
        'directory over a file': outcome(os.rename, j('d2'), j('f1')),
        'directory over a non-empty directory': outcome(os.rename, j('d2'), j('full')),
        'directory over an empty directory': [outcome(os.rename, j('d1', 'inner'), j('d2')), view(j('d1'))['nlink'], view(d)['nlink']],
        'directory into itself': outcome(os.rename, j('d1'), j('d1', 'x')),
        'directory into its own subdir': outcome(os.rename, j('d1'), j('d1', 'd2')) if os.path.isdir(j('d1', 'd2')) else outcome(os.rename, j('full'), j('full', 'sub')),
        'missing source': outcome(os.rename, j('none'), j('x')),
        'into a missing dir': outcome(os.rename, j('p'), j('none', 'x')),
        'under a file': outcome(os.rename, j('p'), j('f1', 'x')),
        'fifo over a file': [outcome(os.rename, j('p'), j('f1')), view(j('f1'))['type']],
        'onto its own hard link': [outcome(os.link, j('f1'), j('f1b')), outcome(os.rename, j('f1'), j('f1b')), os.path.lexists(j('f1')), view(j('f1b'))['nlink']],
        'directory to another parent': [outcome(os.rename, j('d2'), j('d1', 'moved')), view(j('d1'))['nlink'], view(d)['nlink'],
                                        os.lstat(j('d1', 'moved', '..')).st_ino == os.lstat(j('d1')).st_ino],
        'dot': outcome(os.rename, j('d1', '.'), j('dotted')),
        'to dot': outcome(os.rename, j('full'), j('d1', '.')),
    }


@case('rename/flags')
def _rename_flags(d):
    j = lambda *s: os.path.join(d, *s)  # noqa: E731
    for n in ('a', 'b', 'c'):
        make('reg', j(n))
    os.mkdir(j('dir'))
    return {
        'RENAME_NOREPLACE onto an existing name': outcome(renameat2, j('a'), j('b'), RENAME_NOREPLACE),
        'RENAME_NOREPLACE onto a new name': outcome(renameat2, j('a'), j('new'), RENAME_NOREPLACE),
        'RENAME_EXCHANGE of a file and a directory': outcome(renameat2, j('c'), j('dir'), RENAME_EXCHANGE),
        'RENAME_EXCHANGE with a missing name': outcome(renameat2, j('c'), j('none'), RENAME_EXCHANGE),
        'names': sorted(os.listdir(d)),
    }


for _k in NON_DIRS + ['dir']:
    @case(f'{_k}/rename')
    def _rename_kind(d, k=_k):
        a = os.path.join(d, 'a')
        sub = os.path.join(d, 'sub')
        os.mkdir(sub)
        make(k, a, 0o640)
        out = {'in place': outcome(os.rename, a, os.path.join(d, 'b'))}
        out['across'] = outcome(os.rename, os.path.join(d, 'b'), os.path.join(sub, 'c'))
        out['stat'] = view(os.path.join(sub, 'c'))
        out['old names'] = [os.path.lexists(a), os.path.lexists(os.path.join(d, 'b'))]
        make(k, os.path.join(d, 'same-kind'), 0o600)
        out['over the same kind'] = outcome(os.rename, os.path.join(sub, 'c'), os.path.join(d, 'same-kind'))
        out['result'] = view(os.path.join(d, 'same-kind'))
        out['names'] = sorted(os.listdir(d) + os.listdir(sub))
        return out


# ---- sticky directories, and directories the caller cannot write ----------------------------

@case('sticky/root-dir')
def _sticky(d):
    os.chmod(d, 0o1777)
    j = lambda *s: os.path.join(d, *s)  # noqa: E731
    for n in ('rootf', 'rootf2', 'rootp'):
        make('reg' if n != 'rootp' else 'fifo', j(n))
    os.mkdir(j('rootd'))
    as_user(lambda: make('reg', j('userf')))
    as_user(lambda: make('reg', j('userf2')))
    as_user(lambda: make('socket', j('users')))
    return {
        'unlink another\'s file': as_user(lambda: os.unlink(j('rootf'))),
        'unlink another\'s fifo': as_user(lambda: os.unlink(j('rootp'))),
        'rmdir another\'s dir': as_user(lambda: os.rmdir(j('rootd'))),
        'rename another\'s file': as_user(lambda: os.rename(j('rootf'), j('mine'))),
        'rename own file over another\'s': as_user(lambda: os.rename(j('userf'), j('rootf'))),
        'unlink own file': as_user(lambda: os.unlink(j('userf2'))),
        'unlink own socket': as_user(lambda: os.unlink(j('users'))),
        'rename own file': as_user(lambda: os.rename(j('userf'), j('mine'))),
        'root unlinks the user\'s file': outcome(os.unlink, j('mine')),
        'names': sorted(os.listdir(d)),
    }


@case('sticky/user-dir')
def _sticky_owner(d):
    os.chmod(d, 0o1777)
    os.chown(d, USER, USER)
    make('reg', os.path.join(d, 'rootf'))
    return {'the directory\'s owner unlinks root\'s file': as_user(lambda: os.unlink(os.path.join(d, 'rootf')))}


@case('access/not-writable-dir')
def _eacces(d):
    j = lambda *s: os.path.join(d, *s)  # noqa: E731
    os.chmod(d, 0o755)
    make('reg', j('f'))
    os.mkdir(j('sub'))
    os.mkdir(j('closed'), 0o700)
    make('reg', j('closed', 'f'))
    return {
        'create': as_user(lambda: make('reg', j('new'))),
        'mkfifo': as_user(lambda: make('fifo', j('new'))),
        'mkdir': as_user(lambda: os.mkdir(j('new'))),
        'symlink': as_user(lambda: os.symlink('x', j('new'))),
        'unlink': as_user(lambda: os.unlink(j('f'))),
        'rmdir': as_user(lambda: os.rmdir(j('sub'))),
        'rename': as_user(lambda: os.rename(j('f'), j('g'))),
        'link': as_user(lambda: os.link(j('f'), j('g'))),
        'write a 0644 file': as_user(lambda: os.close(os.open(j('f'), os.O_WRONLY))),
        'search a 0700 dir': as_user(lambda: os.stat(j('closed', 'f'))),
        'list a 0700 dir': as_user(lambda: os.listdir(j('closed'))),
    }


# ---- names --------------------------------------------------------------------------------

@case('names/length')
def _names(d):
    j = lambda n: os.path.join(d, n)  # noqa: E731
    ok, long = 'a' * 255, 'b' * 256
    make('reg', j('src'))
    out = {}
    for what, fn in (('open O_CREAT', lambda p: make('reg', p)), ('mkdir', lambda p: make('dir', p)),
                     ('mkfifo', lambda p: make('fifo', p)), ('mknod chr', lambda p: make('chr', p)),
                     ('symlink', lambda p: make('symlink', p)), ('link', lambda p: os.link(j('src'), p)),
                     ('rename', lambda p: os.rename(j('src'), p))):
        # (No bind: a socket's path is at most 107 bytes, whatever the file system.)
        out[what] = [outcome(fn, j(long)), outcome(fn, j(ok))]
        if what != 'rename':
            outcome(os.rmdir if what == 'mkdir' else os.unlink, j(ok))
    out['stat'] = [outcome(os.stat, j(ok)), outcome(os.stat, j(long))]
    out['4-byte characters, 252 bytes'] = outcome(make, 'reg', j('\U0001F600' * 63))
    out['4-byte characters, 256 bytes'] = outcome(make, 'reg', j('\U0001F600' * 64))
    out['a component over 255 bytes in the middle'] = outcome(os.stat, os.path.join(d, long, 'x'))
    return out


@case('names/odd-bytes')
def _odd_names(d):
    out = {}
    # Control characters, a backslash, a leading dash, spaces: any byte but '/' and NUL.
    for n in (b'tab\there', b'new\nline', b'back\\slash', b'-dash', b' space ', b'\x01'):
        p = os.path.join(os.fsencode(d), n)
        out[repr(n)] = [outcome(make, 'reg', p), n in os.listdir(os.fsencode(d))]
    out['empty name'] = outcome(os.open, os.path.join(d, ''), os.O_CREAT | os.O_WRONLY)
    out['dot'] = outcome(os.mkdir, os.path.join(d, '.'))
    out['dotdot'] = outcome(os.mkdir, os.path.join(d, '..'))
    return out


@case('names/not-utf8')
def _not_utf8(d):
    b = os.fsencode(d)
    out = {}
    for n in (b'\xff\xfe', b'\xfe', b'\xff', b'caf\xe9'):
        out[repr(n)] = [outcome(make, 'reg', os.path.join(b, n)), n in os.listdir(b)]
    out['names'] = sorted(repr(n) for n in os.listdir(b))
    return out


@case('names/slash-and-nul')
def _slash(d):
    make('reg', os.path.join(d, 'file'))
    out = {
        # A name cannot hold '/': the kernel splits it into components.
        'a/b, a missing': outcome(make, 'reg', os.path.join(d, 'a/b')),
        'a/b, a a file': outcome(make, 'reg', os.path.join(d, 'file/b')),
        'mkdir a/b, a a file': outcome(make, 'dir', os.path.join(d, 'file/b')),
        'mkfifo x//y': outcome(make, 'fifo', os.path.join(d, 'x//y')),
        'trailing slash on create': outcome(make, 'reg', os.path.join(d, 'new/')),
        'mkdir with trailing slash': outcome(make, 'dir', os.path.join(d, 'newdir/')),
    }
    # Nor NUL: the kernel reads a C string, so the name ends there (Python refuses it; ctypes not).
    fd = libc.open(os.fsencode(os.path.join(d, 'nul')) + b'\x00after', os.O_CREAT | os.O_WRONLY, 0o644)
    out['NUL ends the name'] = [fd >= 0, sorted(os.listdir(d))]
    if fd >= 0:
        os.close(fd)
    return out


@case('names/symlink-target-length')
def _target_len(d):
    return {
        '4095 bytes': [outcome(os.symlink, 'x' * 4095, os.path.join(d, 'a')), len(os.readlink(os.path.join(d, 'a'))) if os.path.lexists(os.path.join(d, 'a')) else None],
        '4096 bytes': outcome(os.symlink, 'x' * 4096, os.path.join(d, 'b')),
        'empty': outcome(os.symlink, '', os.path.join(d, 'c')),
        'size of a symlink': view(os.path.join(d, 'a')).get('size'),
    }


# ---- open flags ---------------------------------------------------------------------------

@case('open/excl')
def _excl(d):
    j = lambda n: os.path.join(d, n)  # noqa: E731
    make('reg', j('f'))
    os.symlink('nowhere', j('dangling'))
    os.symlink('f', j('s'))
    make('fifo', j('p'))
    os.mkdir(j('dir'))
    ce = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    return {
        'new': outcome(lambda: os.close(os.open(j('new'), ce, 0o600))),
        'mode of the new file': view(j('new'))['mode'],
        'existing file': outcome(os.open, j('f'), ce),
        'symlink to a file': outcome(os.open, j('s'), ce),
        'dangling symlink': [outcome(os.open, j('dangling'), ce), os.path.lexists(j('nowhere'))],
        'fifo': outcome(os.open, j('p'), ce),
        'directory': outcome(os.open, j('dir'), ce),
        'O_CREAT through a dangling symlink': [outcome(lambda: os.close(os.open(j('dangling'), os.O_CREAT | os.O_WRONLY, 0o600))), view(j('nowhere'))],
    }


@case('open/trunc-append')
def _trunc_append(d):
    p = os.path.join(d, 'f')
    with open(p, 'wb') as f:
        f.write(b'0123456789')
    out = {}
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b'AB')
    out['O_APPEND after a seek to 0'] = open(p, 'rb').read().decode()
    out['offset after'] = os.lseek(fd, 0, os.SEEK_CUR)
    os.pwrite(fd, b'P', 0)  # Linux appends a pwrite on an O_APPEND descriptor (a known bug, kept)
    out['pwrite on O_APPEND'] = open(p, 'rb').read().decode()
    os.close(fd)
    fd = os.open(p, os.O_RDWR | os.O_TRUNC)
    out['O_TRUNC'] = [os.fstat(fd).st_size, view(p)['size']]
    os.write(fd, b'xyz')
    os.close(fd)
    fd = os.open(p, os.O_RDONLY | os.O_TRUNC)  # unspecified by POSIX; Linux truncates
    out['O_RDONLY|O_TRUNC'] = [os.fstat(fd).st_size, outcome(os.read, fd, 10) and 'read']
    os.close(fd)
    os.chmod(p, 0o444)
    out['O_TRUNC as a user without write permission'] = as_user(lambda: os.open(p, os.O_WRONLY | os.O_TRUNC))
    os.chmod(p, 0o666)
    with open(p, 'wb') as f:
        f.write(b'data')
    out['O_TRUNC as a user with write permission'] = [as_user(lambda: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))), view(p)['size']]
    return out


@case('open/types')
def _open_types(d):
    j = lambda n: os.path.join(d, n)  # noqa: E731
    for k, n in (('reg', 'f'), ('dir', 'dir'), ('fifo', 'p'), ('socket', 'sock')):
        make(k, j(n))
    os.symlink('f', j('s'))
    os.symlink('loop2', j('loop1'))
    os.symlink('loop1', j('loop2'))
    for i in range(41):
        os.symlink('f' if i == 0 else f'chain{i - 1}', j(f'chain{i}'))

    def opened(p, flags):
        os.close(os.open(p, flags))
    return {
        'O_DIRECTORY on a file': outcome(os.open, j('f'), os.O_RDONLY | os.O_DIRECTORY),
        'O_DIRECTORY on a dir': outcome(opened, j('dir'), os.O_RDONLY | os.O_DIRECTORY),
        'O_WRONLY on a dir': outcome(os.open, j('dir'), os.O_WRONLY),
        'O_CREAT on a dir': outcome(os.open, j('dir'), os.O_CREAT | os.O_RDONLY),
        'O_NOFOLLOW on a symlink': outcome(os.open, j('s'), os.O_RDONLY | os.O_NOFOLLOW),
        'O_NOFOLLOW|O_PATH on a symlink': outcome(opened, j('s'), os.O_PATH | os.O_NOFOLLOW),
        'symlink loop': [outcome(os.stat, j('loop1')), outcome(os.open, j('loop1'), os.O_RDONLY)],
        '40 symlinks deep': outcome(os.stat, j('chain39')),
        '41 symlinks deep': outcome(os.stat, j('chain40')),
        'fifo O_RDONLY|O_NONBLOCK': outcome(opened, j('p'), os.O_RDONLY | os.O_NONBLOCK),
        'fifo O_WRONLY|O_NONBLOCK, no reader': outcome(os.open, j('p'), os.O_WRONLY | os.O_NONBLOCK),
        'socket': outcome(os.open, j('sock'), os.O_RDONLY),
        'a file as a directory': outcome(os.stat, j('f') + '/'),
    }


# ---- FIFOs and sockets work; device nodes follow the mount's dev/nodev ----------------------

@case('fifo/data')
def _fifo_data(d):
    p = os.path.join(d, 'p')
    os.mkfifo(p)
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(p, os.O_WRONLY)
            os.write(fd, b'through the fifo')
            os.close(fd)
        finally:
            os._exit(0)
    fd = os.open(p, os.O_RDONLY)
    got = b''
    while True:
        b = os.read(fd, 100)
        if not b:
            break
        got += b
    os.close(fd)
    os.waitpid(pid, 0)
    return {'read': got.decode(), 'size after': view(p)['size']}


@case('socket/data')
def _socket_data(d):
    p = os.path.join(d, 's')
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(p)
    srv.listen(1)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(p)
    conn, _ = srv.accept()
    cli.sendall(b'ping')
    got = conn.recv(10)
    again = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out = {'exchange': got.decode(), 'bind an existing path': outcome(again.bind, p), 'stat': view(p)}
    for s in (again, conn, cli, srv):
        s.close()
    out['connect once closed'] = outcome(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(p))
    return out


@case('dev/open')
def _dev_open(d):
    # A mount with `nodev` refuses to open device nodes (EACCES); the test checks this case
    # against the mount's options rather than against local disk.
    make('chr', os.path.join(d, 'null'), 0o666)
    make('blk', os.path.join(d, 'blk'), 0o600)
    return {'open a char device': outcome(lambda: os.close(os.open(os.path.join(d, 'null'), os.O_WRONLY))),
            'open a block device': outcome(lambda: os.close(os.open(os.path.join(d, 'blk'), os.O_RDONLY)))}


@case('dev/numbers')
def _dev_numbers(d):
    out = {}
    for name, (maj, mino) in (('0,0', (0, 0)), ('max', (4095, 1048575)), ('8,1', (8, 1))):
        p = os.path.join(d, name)
        out[name] = [outcome(os.mknod, p, stat.S_IFCHR | 0o600, os.makedev(maj, mino)), view(p).get('rdev')]
    return out


# ---- ownership rules the file system applies ------------------------------------------------

@case('setgid-dir/inherit')
def _setgid(d):
    os.chown(d, 0, OTHER)
    os.chmod(d, 0o2777)
    out = {}
    for k in KINDS:
        p = os.path.join(d, k)
        out[k] = [outcome(make, k, p, 0o2755), view(p)]
    out['as a user'] = [as_user(lambda: make('reg', os.path.join(d, 'u'), 0o2755)), view(os.path.join(d, 'u'))]
    out['a subdir as a user'] = [as_user(lambda: make('dir', os.path.join(d, 'ud'))), view(os.path.join(d, 'ud'))]
    return out


@case('write/clears-setid')
def _kill_suid(d):
    p = os.path.join(d, 'f')
    make('reg', p)
    os.chmod(p, 0o6777)

    def write():
        fd = os.open(p, os.O_WRONLY)
        os.write(fd, b'x')
        os.close(fd)
    out = {'root writes': [outcome(write), view(p)['mode']]}
    out['a user writes'] = [as_user(write), view(p)['mode']]
    os.chmod(p, 0o6777)
    out['a user truncates'] = [as_user(lambda: os.truncate(p, 0)), view(p)['mode']]
    return out


# ---- fallocate ----------------------------------------------------------------------------

@case('fallocate/modes')
def _fallocate(d):
    p = os.path.join(d, 'f')
    with open(p, 'wb') as f:
        f.write(bytes(range(256)) * 64)
    out = {}
    fd = os.open(p, os.O_RDWR)
    # Block-aligned ranges (COLLAPSE and INSERT need them on ext4), one inside the file, one past it.
    for mode, off, length in (('0', 0, 65536), ('KEEP_SIZE', 65536, 8192), ('PUNCH_HOLE|KEEP_SIZE', 4096, 4096),
                              ('ZERO_RANGE', 12288, 100), ('ZERO_RANGE|KEEP_SIZE', 60000, 9000), ('ZERO_RANGE', 70000, 5000),
                              ('PUNCH_HOLE', 0, 4096), ('COLLAPSE_RANGE', 4096, 4096), ('INSERT_RANGE', 4096, 4096),
                              ('0', 0, 0), ('0', -1, 10)):
        r = outcome(fallocate, fd, mode, off, length)
        with open(p, 'rb') as f:
            data = f.read()
        out['%s at %d for %d' % (mode, off, length)] = [r, len(data), hashlib.sha256(data).hexdigest()[:16]]
    os.close(fd)
    os.mkfifo(os.path.join(d, 'p'))
    fd = os.open(os.path.join(d, 'p'), os.O_RDWR)
    out['a fifo'] = outcome(fallocate, fd, '0', 0, 10)
    os.close(fd)
    fd = os.open(p, os.O_RDONLY)
    out['a read-only descriptor'] = outcome(fallocate, fd, '0', 0, 10)
    os.close(fd)
    return out


# ---- bad input (issue item 6) -------------------------------------------------------------

@case('bad-input/modes')
def _bad_modes(d):
    j = lambda n: os.path.join(d, n)  # noqa: E731
    out = {
        'open with mode 0177777': [outcome(lambda: os.close(os.open(j('f'), os.O_CREAT | os.O_WRONLY, 0o177777))), view(j('f'))],
        'mkdir with mode 0177777': [outcome(os.mkdir, j('d'), 0o177777), view(j('d'))],
        'mkfifo with mode 0177777': [outcome(os.mkfifo, j('bad-p'), 0o177777), view(j('bad-p'))],
        'mkfifo with mode 07777': [outcome(os.mkfifo, j('p'), 0o7777), view(j('p'))],
        'chmod 0177777': [outcome(os.chmod, j('f'), 0o177777), view(j('f'))],
        'chmod 0107777 of a fifo': [outcome(os.chmod, j('p'), 0o107777), view(j('p'))],
        'mknod S_IFREG with rdev': [outcome(os.mknod, j('r'), stat.S_IFREG | 0o644, os.makedev(8, 1)), view(j('r'))],
        'mknod type 0 with rdev': [outcome(os.mknod, j('r0'), 0o644, os.makedev(8, 1)), view(j('r0'))],
        'mknod fifo with rdev': [outcome(os.mknod, j('pr'), stat.S_IFIFO | 0o644, os.makedev(8, 1)), view(j('pr'))],
        'mknod socket with rdev': [outcome(os.mknod, j('sr'), stat.S_IFSOCK | 0o644, os.makedev(8, 1)), view(j('sr'))],
        'mknod S_IFDIR': outcome(os.mknod, j('dd'), stat.S_IFDIR | 0o755),
        'mknod S_IFLNK': outcome(os.mknod, j('ll'), stat.S_IFLNK | 0o777),
        'mknod an unknown type': outcome(os.mknod, j('uu'), 0o030000 | 0o644),
        'mknod chr as a user': as_user(lambda: os.mknod(j('uc'), stat.S_IFCHR | 0o644, os.makedev(1, 3))),
        'names': sorted(os.listdir(d)),
    }
    return out


# ---- refused input: every step must fail, and nothing may reach the store ---------------------

def refused(d):
    """Steps in d (which holds a file 'f' and a directory 'd' with a file 'd/x') that must all fail."""
    j = lambda *s: os.path.join(d, *s)  # noqa: E731
    long = 'n' * 256
    steps = {
        'create, 256-byte name': lambda: make('reg', j(long)),
        'mkdir, 256-byte name': lambda: make('dir', j(long)),
        'mkfifo, 256-byte name': lambda: make('fifo', j(long)),
        'mknod chr, 256-byte name': lambda: make('chr', j(long)),
        'symlink, 256-byte name': lambda: make('symlink', j(long)),
        'link, 256-byte name': lambda: os.link(j('f'), j(long)),
        'rename to a 256-byte name': lambda: os.rename(j('f'), j(long)),
        'symlink target of 4096 bytes': lambda: os.symlink('t' * 4096, j('s')),
        'create under a file (a name with /)': lambda: make('reg', j('f', 'x')),
        'mkdir under a missing dir': lambda: make('dir', j('none', 'x')),
        'mknod S_IFDIR': lambda: os.mknod(j('m'), stat.S_IFDIR | 0o755),
        'mknod of an unknown type': lambda: os.mknod(j('m'), 0o030000 | 0o644),
        'mkfifo with mode 0177777': lambda: os.mkfifo(j('m'), 0o177777),
        'mknod chr as a user': lambda: as_user(lambda: os.mknod(j('m'), stat.S_IFCHR | 0o644, os.makedev(1, 3)), 'raise'),
        'chmod as a non-owner': lambda: as_user(lambda: os.chmod(j('f'), 0o777), 'raise'),
        'chown as a non-owner': lambda: as_user(lambda: os.chown(j('f'), USER, USER), 'raise'),
        'utimens as a non-owner': lambda: as_user(lambda: utimensat(j('f'), (1, 0), (2, 0)), 'raise'),
        'create an existing name with O_EXCL': lambda: make('reg', j('f')),
        'mkdir an existing name': lambda: make('dir', j('d')),
        'link a directory': lambda: os.link(j('d'), j('dl')),
        'rename a directory into itself': lambda: os.rename(j('d'), j('d', 'in')),
        'rmdir a non-empty directory': lambda: os.rmdir(j('d')),
        'unlink a directory': lambda: os.unlink(j('d')),
        'truncate a directory': lambda: os.truncate(j('d'), 0),
        'truncate to a negative size': lambda: os.truncate(j('f'), -1),
        'xattr name of 256 bytes': lambda: os.setxattr(j('f'), 'user.' + 'k' * 251, b'v'),
        'xattr value over 64 KiB': lambda: os.setxattr(j('f'), 'user.big', b'v' * 65537),
    }
    print(json.dumps({name: outcome(fn) for name, fn in steps.items()}))


# ---- runner -------------------------------------------------------------------------------

def run(root, prefixes):
    os.umask(0o022)
    for i, (cid, fn) in enumerate(CASES):
        if prefixes and not any(cid.startswith(p) for p in prefixes):
            continue
        d = os.path.join(root, '%03d-%s' % (i, cid.replace('/', '-')))
        os.mkdir(d, 0o755)
        try:
            out = fn(d)
        except Exception as e:  # a case that breaks is an outcome too, reported as such
            out = 'EXCEPTION %s: %s' % (type(e).__name__, e)
        print(json.dumps({'id': cid, 'out': out}), flush=True)


def tree(root):
    """Every entry under root (not .reef) with what must survive a fold and a remount."""
    first = {}
    rows = []
    for dirpath, dirs, files in os.walk(root):
        if dirpath == root and '.reef' in dirs:
            dirs.remove('.reef')
        dirs.sort()
        for n in sorted(dirs + files):
            p = os.path.join(dirpath, n)
            s = os.lstat(p)
            rel = os.path.relpath(p, root)
            v = view(p)
            v['mtime'] = s.st_mtime_ns
            if stat.S_ISDIR(s.st_mode):
                v['size'] = s.st_size
            if stat.S_ISLNK(s.st_mode):
                v['target'] = os.readlink(p)
            if stat.S_ISREG(s.st_mode):
                with open(p, 'rb') as f:
                    v['sha256'] = hashlib.sha256(f.read()).hexdigest()
            # Hard-link identity: the first path seen with this inode.
            if s.st_nlink > 1 and not stat.S_ISDIR(s.st_mode):
                v['same as'] = first.setdefault(s.st_ino, rel)
            rows.append({'path': rel, **v})
    print(json.dumps(rows))


if __name__ == '__main__':
    if len(sys.argv) >= 3 and sys.argv[1] == '--tree':
        tree(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == '--refused':
        os.umask(0o022)
        refused(sys.argv[2])
    elif len(sys.argv) >= 2:
        run(sys.argv[1], sys.argv[2:])
    else:
        sys.exit(__doc__)
