/*
 * ops.c: the requests beyond the read-only foundation in ring.c: the namespace and data
 * mutations (setattr, mknod, mkdir, symlink, link, unlink, rmdir, rename with its RENAME_*
 * flags, create, write), readlink, flush/fsync/fsyncdir, the xattrs, access and readdirplus.
 * Each callback copies what its request carries into the reef_req (write's bytes and
 * setxattr's value included: the kernel's buffer is gone once the callback returns) and queues
 * it through ring.c; reef_ops_fields adds those fields to the object JS gets.
 */
#include "reef_fuse3.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static reef_req *named(fuse_req_t req, enum reef_op op, fuse_ino_t parent, const char *name) {
  reef_req *r = reef_req_new(req, op, parent);
  r->name = strdup(name);
  return r;
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_SETATTR, ino);
  reef_req_fi(r, fi);
  r->has_fh = fi != NULL;
  r->to_set = to_set;
  r->attr = *attr;
  reef_req_queue(r);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                     dev_t rdev) {
  reef_req *r = named(req, OP_MKNOD, parent, name);
  r->mode = mode;
  r->rdev = rdev;
  reef_req_queue(r);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  reef_req *r = named(req, OP_MKDIR, parent, name);
  r->mode = mode;
  reef_req_queue(r);
}

static void ll_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name) {
  reef_req *r = named(req, OP_SYMLINK, parent, name);
  r->name2 = strdup(target);
  reef_req_queue(r);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) {
  reef_req_queue(reef_req_new(req, OP_READLINK, ino));
}

/* ino is the existing inode; the new name goes in ino2/name2 like rename's. */
static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  reef_req *r = reef_req_new(req, OP_LINK, ino);
  r->ino2 = newparent;
  r->name2 = strdup(newname);
  reef_req_queue(r);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  reef_req_queue(named(req, OP_UNLINK, parent, name));
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  reef_req_queue(named(req, OP_RMDIR, parent, name));
}

/* flags: renameat2's RENAME_NOREPLACE / RENAME_EXCHANGE, passed to JS as they came. */
static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags) {
  reef_req *r = named(req, OP_RENAME, parent, name);
  r->ino2 = newparent;
  r->name2 = strdup(newname);
  r->flags = (int)flags;
  reef_req_queue(r);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi) {
  reef_req *r = named(req, OP_CREATE, parent, name);
  reef_req_fi(r, fi);
  r->mode = mode;
  reef_req_queue(r);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_WRITE, ino);
  reef_req_fi(r, fi);
  r->off = off;
  r->size = size;
  r->data = buf;
  r->datalen = size;
  reef_req_queue(r);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_FLUSH, ino);
  reef_req_fi(r, fi);
  reef_req_queue(r);
}

static void sync_req(fuse_req_t req, enum reef_op op, fuse_ino_t ino, int datasync,
                     struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, op, ino);
  reef_req_fi(r, fi);
  r->flags = datasync;
  reef_req_queue(r);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  sync_req(req, OP_FSYNC, ino, datasync, fi);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  sync_req(req, OP_FSYNCDIR, ino, datasync, fi);
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags) {
  reef_req *r = reef_req_new(req, OP_SETXATTR, ino);
  r->name2 = strdup(name);
  r->data = value;
  r->datalen = size;
  r->flags = flags;
  reef_req_queue(r);
}

/* size 0 asks for the value's length (fuse_reply_xattr), else the value if it fits (ERANGE). */
static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  reef_session *s = fuse_req_userdata(req);
  /* The kernel asks for security.capability before every write (to drop it); answering here
   * saves that hand-off. Only when JS keeps no security.* or system.* xattrs (caps). */
  if (s->caps.no_security_xattrs &&
      (strncmp(name, "security.", 9) == 0 || strncmp(name, "system.", 7) == 0)) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  reef_req *r = reef_req_new(req, OP_GETXATTR, ino);
  r->name2 = strdup(name);
  r->size = size;
  reef_req_queue(r);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  reef_req *r = reef_req_new(req, OP_LISTXATTR, ino);
  r->size = size;
  reef_req_queue(r);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  reef_req *r = reef_req_new(req, OP_REMOVEXATTR, ino);
  r->name2 = strdup(name);
  reef_req_queue(r);
}

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  reef_req *r = reef_req_new(req, OP_ACCESS, ino);
  r->flags = mask;
  reef_req_queue(r);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_READDIRPLUS, ino);
  reef_req_fi(r, fi);
  r->size = size;
  r->off = off;
  reef_req_queue(r);
}

/* mode: FALLOC_FL_* (KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE, ...) as the caller gave them. */
static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_FALLOCATE, ino);
  reef_req_fi(r, fi);
  r->mode = (mode_t)mode;
  r->off = offset;
  r->size = (size_t)length;
  reef_req_queue(r);
}

/* whence: SEEK_DATA or SEEK_HOLE (the kernel answers SEEK_SET/CUR/END itself). */
static void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_LSEEK, ino);
  r->fh = fi->fh;
  r->off = off;
  r->flags = whence;
  reef_req_queue(r);
}

/* Optional ops are set only when JS has a handler: an unset op answers ENOSYS in libfuse, and
 * the kernel then stops asking (the same as JS answering ENOSYS, without the hand-off). */
void reef_ops_add(struct fuse_lowlevel_ops *ops, const reef_has *has) {
  if (has->fallocate) ops->fallocate = ll_fallocate;
  if (has->lseek) ops->lseek = ll_lseek;
  ops->setattr = ll_setattr;
  ops->mknod = ll_mknod;
  ops->mkdir = ll_mkdir;
  ops->symlink = ll_symlink;
  ops->readlink = ll_readlink;
  ops->link = ll_link;
  ops->unlink = ll_unlink;
  ops->rmdir = ll_rmdir;
  ops->rename = ll_rename;
  ops->create = ll_create;
  ops->write = ll_write;
  ops->flush = ll_flush;
  ops->fsync = ll_fsync;
  ops->fsyncdir = ll_fsyncdir;
  ops->setxattr = ll_setxattr;
  ops->getxattr = ll_getxattr;
  ops->listxattr = ll_listxattr;
  ops->removexattr = ll_removexattr;
  ops->access = ll_access;
  if (has->readdirplus) ops->readdirplus = ll_readdirplus;
}

static void set_num(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

/* A time as a BigInt of ns since the epoch: exact, where a double of ms would round. */
static void set_ns(napi_env env, napi_value obj, const char *key, struct timespec t) {
  napi_value n;
  napi_create_bigint_int64(env, (int64_t)t.tv_sec * 1000000000 + t.tv_nsec, &n);
  napi_set_named_property(env, obj, key, n);
}

/* setattr's { mode?, uid?, gid?, size?, atimeNs?, mtimeNs?, ctimeNs? (BigInt ns), atimeNow?, mtimeNow? }:
 * only what the kernel asked to change is present (UTIME_OMIT leaves a time out). */
static napi_value set_object(napi_env env, reef_req *r) {
  napi_value set, t;
  napi_create_object(env, &set);
  napi_get_boolean(env, true, &t);
  int s = r->to_set;
  if (s & FUSE_SET_ATTR_MODE) set_num(env, set, "mode", r->attr.st_mode);
  if (s & FUSE_SET_ATTR_UID) set_num(env, set, "uid", r->attr.st_uid);
  if (s & FUSE_SET_ATTR_GID) set_num(env, set, "gid", r->attr.st_gid);
  if (s & FUSE_SET_ATTR_SIZE) set_num(env, set, "size", (double)r->attr.st_size);
  if (s & FUSE_SET_ATTR_ATIME_NOW) napi_set_named_property(env, set, "atimeNow", t);
  else if (s & FUSE_SET_ATTR_ATIME) set_ns(env, set, "atimeNs", r->attr.st_atim);
  if (s & FUSE_SET_ATTR_MTIME_NOW) napi_set_named_property(env, set, "mtimeNow", t);
  else if (s & FUSE_SET_ATTR_MTIME) set_ns(env, set, "mtimeNs", r->attr.st_mtim);
  if (s & FUSE_SET_ATTR_CTIME) set_ns(env, set, "ctimeNs", r->attr.st_ctim);
  return set;
}

void reef_ops_fields(napi_env env, napi_value obj, reef_req *r) {
  napi_value v;
  set_num(env, obj, "ino2", (double)r->ino2);
  set_num(env, obj, "mode", r->mode);
  set_num(env, obj, "rdev", (double)r->rdev);
  if (r->name2) { /* a name or link target as bytes; an xattr's name as a string */
    bool xattr = r->op == OP_SETXATTR || r->op == OP_GETXATTR || r->op == OP_REMOVEXATTR;
    if (xattr) napi_create_string_utf8(env, r->name2, NAPI_AUTO_LENGTH, &v);
    else napi_create_buffer_copy(env, strlen(r->name2), r->name2, NULL, &v);
    napi_set_named_property(env, obj, "name2", v);
  }
  if (r->data) {
    napi_create_buffer_copy(env, r->datalen, r->data, NULL, &v);
    napi_set_named_property(env, obj, "data", v);
    r->data = NULL; /* the kernel's buffer is reused once this callback returns */
  }
  if (r->op == OP_SETATTR) {
    napi_set_named_property(env, obj, "set", set_object(env, r));
    napi_get_boolean(env, r->has_fh, &v);
    napi_set_named_property(env, obj, "hasFh", v);
  }
}
