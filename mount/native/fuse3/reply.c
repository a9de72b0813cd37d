/*
 * reply.c: answers from JS. Each reply*(req, ...) takes the request external handed to JS by
 * ring.c, answers the kernel exactly once (a second answer throws) and drops the request's hold
 * on its session. Attributes arrive as { ino, mode, nlink, uid, gid, rdev, size, blocks,
 * atimeNs, mtimeNs, ctimeNs } (BigInt ns; or atimeMs, ... as numbers). A field of the wrong
 * type throws a TypeError and nothing is answered (the TS wrapper then answers EIO).
 */
#include "reef_fuse3.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/statvfs.h>

reef_req *reef_req_take(napi_env env, napi_value external) {
  reef_req *r = NULL;
  if (napi_get_value_external(env, external, (void **)&r) != napi_ok || r == NULL) {
    napi_throw_type_error(env, NULL, "not a FUSE request");
    return NULL;
  }
  if (r->req == NULL) {
    napi_throw_error(env, "EALREADY", "FUSE request already answered");
    return NULL;
  }
  return r;
}

static void answered(reef_req *r) {
  r->req = NULL;
  reef_session_unref(r->s);
}

/* A field of a JS object as a number; absent is 0. Any other type throws a TypeError (the caller
 * returns without answering, and the TS wrapper answers EIO): a reply JS could not express is a
 * bug to report, not a zero to send. */
static double num(napi_env env, napi_value obj, const char *key) {
  napi_value v;
  napi_valuetype t;
  double d = 0;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_undefined) return 0;
  if (t != napi_number) {
    bool pending;
    napi_is_exception_pending(env, &pending);
    if (!pending) {
      char msg[96];
      snprintf(msg, sizeof msg, "reply field %s is not a number", key);
      napi_throw_type_error(env, NULL, msg);
    }
    return 0;
  }
  napi_get_value_double(env, v, &d);
  return isnan(d) ? 0 : d;
}

/* Times: `<x>timeNs` (a BigInt of ns since the epoch, exact) or else `<x>timeMs` (a number). */
static struct timespec ts_of(napi_env env, napi_value a, const char *ns_key, const char *ms_key) {
  napi_value v;
  napi_valuetype t;
  struct timespec out;
  if (napi_get_named_property(env, a, ns_key, &v) == napi_ok && napi_typeof(env, v, &t) == napi_ok &&
      t == napi_bigint) {
    int64_t ns;
    bool lossless;
    napi_get_value_bigint_int64(env, v, &ns, &lossless);
    int64_t sec = ns / 1000000000, rem = ns % 1000000000;
    if (rem < 0) { sec -= 1; rem += 1000000000; }
    out.tv_sec = (time_t)sec;
    out.tv_nsec = (long)rem;
    return out;
  }
  double ms = num(env, a, ms_key);
  out.tv_sec = (time_t)floor(ms / 1000);
  out.tv_nsec = (long)((ms - (double)out.tv_sec * 1000) * 1e6);
  return out;
}

static bool pending_exception(napi_env env) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  return pending;
}

/* A name or link target from JS: a string (as UTF-8) or a Uint8Array/Buffer (its bytes as they
 * are, for names that are not UTF-8), copied NUL-terminated into out. false with a TypeError
 * pending if it is neither, or does not fit (or holds a NUL byte). */
static bool bytes_of(napi_env env, napi_value v, char *out, size_t cap) {
  napi_valuetype t;
  bool is_ta = false;
  size_t len = 0;
  if (napi_typeof(env, v, &t) == napi_ok && t == napi_string) {
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) == napi_ok && len < cap) {
      napi_get_value_string_utf8(env, v, out, cap, &len);
      return true;
    }
  } else if (napi_is_typedarray(env, v, &is_ta) == napi_ok && is_ta) {
    napi_typedarray_type type;
    void *data;
    napi_get_typedarray_info(env, v, &type, &len, &data, NULL, NULL);
    if (type == napi_uint8_array && len < cap && memchr(data, 0, len) == NULL) {
      memcpy(out, data, len);
      out[len] = 0;
      return true;
    }
  }
  if (!pending_exception(env)) napi_throw_type_error(env, NULL, "a name is not a string or Uint8Array (or too long, or holds a NUL)");
  return false;
}

/* false (with a JS exception pending) when a field could not be converted. */
static bool to_stat(napi_env env, napi_value a, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)num(env, a, "ino");
  st->st_mode = (mode_t)num(env, a, "mode");
  st->st_nlink = (nlink_t)num(env, a, "nlink");
  st->st_uid = (uid_t)num(env, a, "uid");
  st->st_gid = (gid_t)num(env, a, "gid");
  st->st_rdev = (dev_t)num(env, a, "rdev");
  st->st_size = (off_t)num(env, a, "size");
  st->st_blocks = (blkcnt_t)num(env, a, "blocks");
  st->st_blksize = 4096;
  st->st_atim = ts_of(env, a, "atimeNs", "atimeMs");
  st->st_mtim = ts_of(env, a, "mtimeNs", "mtimeMs");
  st->st_ctim = ts_of(env, a, "ctimeNs", "ctimeMs");
  return !pending_exception(env);
}

#define ARGS(n)                                                      \
  size_t argc = (n);                                                 \
  napi_value argv[(n)];                                              \
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL)); \
  reef_req *r = reef_req_take(env, argv[0]);                         \
  if (r == NULL) return NULL

/* replyErr(req, errno) */
static napi_value reply_err(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t err = EIO;
  napi_get_value_int32(env, argv[1], &err);
  fuse_reply_err(r->req, err);
  answered(r);
  return NULL;
}

/* replyEntry(req, attr, attrTimeoutS, entryTimeoutS): the kernel's lookup count of attr.ino grows. */
static napi_value reply_entry(napi_env env, napi_callback_info info) {
  ARGS(4);
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  if (!to_stat(env, argv[1], &e.attr)) return NULL;
  e.ino = e.attr.st_ino;
  NAPI_OK(env, napi_get_value_double(env, argv[2], &e.attr_timeout));
  NAPI_OK(env, napi_get_value_double(env, argv[3], &e.entry_timeout));
  fuse_reply_entry(r->req, &e);
  answered(r);
  return NULL;
}

/* replyAttr(req, attr, timeoutS) */
static napi_value reply_attr(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct stat st;
  double timeout;
  if (!to_stat(env, argv[1], &st)) return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[2], &timeout));
  fuse_reply_attr(r->req, &st, timeout);
  answered(r);
  return NULL;
}

/* replyOpen(req, fh, keepCache) */
static napi_value reply_open(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct fuse_file_info fi;
  double fh;
  bool keep;
  memset(&fi, 0, sizeof fi);
  NAPI_OK(env, napi_get_value_double(env, argv[1], &fh));
  NAPI_OK(env, napi_get_value_bool(env, argv[2], &keep));
  fi.fh = (uint64_t)fh;
  fi.keep_cache = keep;
  fuse_reply_open(r->req, &fi);
  answered(r);
  return NULL;
}

/* replyData(req, buffer) */
static napi_value reply_data(napi_env env, napi_callback_info info) {
  ARGS(2);
  void *data;
  size_t len;
  NAPI_OK(env, napi_get_buffer_info(env, argv[1], &data, &len));
  fuse_reply_buf(r->req, data, len);
  answered(r);
  return NULL;
}

/* replyDataV(req, parts: Uint8Array[]): the parts in order, as one reply (fuse_reply_iov): the
 * pieces a read lies in go to the kernel without being joined first. A part that is not a
 * Uint8Array throws a TypeError and nothing is answered. */
static napi_value reply_data_v(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t n;
  NAPI_OK(env, napi_get_array_length(env, argv[1], &n));
  struct iovec *iov = calloc(n > 0 ? n : 1, sizeof *iov);
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    bool is_ta = false;
    napi_typedarray_type type;
    size_t len = 0;
    void *data = NULL;
    if (napi_get_element(env, argv[1], i, &v) != napi_ok || napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
        napi_get_typedarray_info(env, v, &type, &len, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
      free(iov);
      if (!pending_exception(env)) napi_throw_type_error(env, NULL, "replyDataV: a part is not a Uint8Array");
      return NULL;
    }
    iov[i].iov_base = data;
    iov[i].iov_len = len;
  }
  fuse_reply_iov(r->req, iov, (int)n);
  free(iov);
  answered(r);
  return NULL;
}

/* replyDir(req, entries: {name, ino, mode}[]): entries start at the request's offset; the
 * cookie of entry i is off + i + 1. What does not fit in the kernel's buffer is asked again. */
static napi_value reply_dir(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t n;
  NAPI_OK(env, napi_get_array_length(env, argv[1], &n));
  char *buf = malloc(r->size);
  size_t used = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value ent, v;
    char name[1024];
    struct stat st;
    memset(&st, 0, sizeof st);
    napi_get_element(env, argv[1], i, &ent);
    napi_get_named_property(env, ent, "name", &v);
    st.st_ino = (ino_t)num(env, ent, "ino");
    st.st_mode = (mode_t)num(env, ent, "mode");
    if (!bytes_of(env, v, name, sizeof name) || pending_exception(env)) {
      free(buf);
      return NULL;
    }
    size_t need = fuse_add_direntry(r->req, buf + used, r->size - used, name, &st, r->off + i + 1);
    if (need > r->size - used) break;
    used += need;
  }
  fuse_reply_buf(r->req, buf, used);
  free(buf);
  answered(r);
  return NULL;
}

/* replyStatfs(req, { bsize, blocks, bfree, bavail, files, ffree, namemax }) */
static napi_value reply_statfs(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct statvfs sv;
  memset(&sv, 0, sizeof sv);
  sv.f_bsize = sv.f_frsize = (unsigned long)num(env, argv[1], "bsize");
  sv.f_blocks = (fsblkcnt_t)num(env, argv[1], "blocks");
  sv.f_bfree = (fsblkcnt_t)num(env, argv[1], "bfree");
  sv.f_bavail = (fsblkcnt_t)num(env, argv[1], "bavail");
  sv.f_files = (fsfilcnt_t)num(env, argv[1], "files");
  sv.f_ffree = (fsfilcnt_t)num(env, argv[1], "ffree");
  sv.f_namemax = (unsigned long)num(env, argv[1], "namemax");
  fuse_reply_statfs(r->req, &sv);
  answered(r);
  return NULL;
}

/* replyCreate(req, attr, attrTimeoutS, entryTimeoutS, fh, keepCache): an entry (one lookup
 * more) and an open handle in one answer. */
static napi_value reply_create(napi_env env, napi_callback_info info) {
  ARGS(6);
  struct fuse_entry_param e;
  struct fuse_file_info fi;
  double fh;
  bool keep;
  memset(&e, 0, sizeof e);
  memset(&fi, 0, sizeof fi);
  if (!to_stat(env, argv[1], &e.attr)) return NULL;
  e.ino = e.attr.st_ino;
  NAPI_OK(env, napi_get_value_double(env, argv[2], &e.attr_timeout));
  NAPI_OK(env, napi_get_value_double(env, argv[3], &e.entry_timeout));
  NAPI_OK(env, napi_get_value_double(env, argv[4], &fh));
  NAPI_OK(env, napi_get_value_bool(env, argv[5], &keep));
  fi.fh = (uint64_t)fh;
  fi.keep_cache = keep;
  fuse_reply_create(r->req, &e, &fi);
  answered(r);
  return NULL;
}

/* replyWrite(req, count): how many of the request's bytes were written. */
static napi_value reply_write(napi_env env, napi_callback_info info) {
  ARGS(2);
  double count;
  NAPI_OK(env, napi_get_value_double(env, argv[1], &count));
  fuse_reply_write(r->req, (size_t)count);
  answered(r);
  return NULL;
}

/* replyReadlink(req, target: Uint8Array | string) */
static napi_value reply_readlink(napi_env env, napi_callback_info info) {
  ARGS(2);
  char *target = malloc(PATH_MAX);
  if (!bytes_of(env, argv[1], target, PATH_MAX)) {
    free(target);
    return NULL;
  }
  fuse_reply_readlink(r->req, target);
  free(target);
  answered(r);
  return NULL;
}

/* replyXattrSize(req, size): the answer to a size probe (getxattr/listxattr with size 0). */
static napi_value reply_xattr_size(napi_env env, napi_callback_info info) {
  ARGS(2);
  double size;
  NAPI_OK(env, napi_get_value_double(env, argv[1], &size));
  fuse_reply_xattr(r->req, (size_t)size);
  answered(r);
  return NULL;
}

/* replyDirPlus(req, entries: {name, attr, attrTimeout, entryTimeout}[]) -> how many were sent.
 * Like replyDir (entries start at the request's offset, cookie off + i + 1), but each entry
 * carries its attributes, and each one sent except '.' and '..' adds 1 to the kernel's lookup
 * count of its inode: the caller counts only the first `sent`. */
static napi_value reply_dir_plus(napi_env env, napi_callback_info info) {
  ARGS(2);
  uint32_t n;
  NAPI_OK(env, napi_get_array_length(env, argv[1], &n));
  char *buf = malloc(r->size);
  size_t used = 0;
  uint32_t sent = 0;
  for (; sent < n; sent++) {
    napi_value ent, v, a;
    char name[1024];
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    napi_get_element(env, argv[1], sent, &ent);
    napi_get_named_property(env, ent, "name", &v);
    napi_get_named_property(env, ent, "attr", &a);
    if (!bytes_of(env, v, name, sizeof name) || !to_stat(env, a, &e.attr)) {
      free(buf);
      return NULL;
    }
    e.ino = e.attr.st_ino;
    e.attr_timeout = num(env, ent, "attrTimeout");
    e.entry_timeout = num(env, ent, "entryTimeout");
    size_t need = fuse_add_direntry_plus(r->req, buf + used, r->size - used, name, &e,
                                         r->off + sent + 1);
    if (need > r->size - used) break;
    used += need;
  }
  fuse_reply_buf(r->req, buf, used);
  free(buf);
  answered(r);
  napi_value out;
  NAPI_OK(env, napi_create_uint32(env, sent, &out));
  return out;
}

/* replyLseek(req, off): where SEEK_DATA/SEEK_HOLE landed. */
static napi_value reply_lseek(napi_env env, napi_callback_info info) {
  ARGS(2);
  double off;
  NAPI_OK(env, napi_get_value_double(env, argv[1], &off));
  fuse_reply_lseek(r->req, (off_t)off);
  answered(r);
  return NULL;
}

napi_value reef_reply_exports(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "replyErr", NULL, reply_err, NULL, NULL, NULL, napi_default, NULL },
    { "replyEntry", NULL, reply_entry, NULL, NULL, NULL, napi_default, NULL },
    { "replyAttr", NULL, reply_attr, NULL, NULL, NULL, napi_default, NULL },
    { "replyOpen", NULL, reply_open, NULL, NULL, NULL, napi_default, NULL },
    { "replyData", NULL, reply_data, NULL, NULL, NULL, napi_default, NULL },
    { "replyDataV", NULL, reply_data_v, NULL, NULL, NULL, napi_default, NULL },
    { "replyDir", NULL, reply_dir, NULL, NULL, NULL, napi_default, NULL },
    { "replyStatfs", NULL, reply_statfs, NULL, NULL, NULL, napi_default, NULL },
    { "replyCreate", NULL, reply_create, NULL, NULL, NULL, napi_default, NULL },
    { "replyWrite", NULL, reply_write, NULL, NULL, NULL, napi_default, NULL },
    { "replyReadlink", NULL, reply_readlink, NULL, NULL, NULL, napi_default, NULL },
    { "replyXattrSize", NULL, reply_xattr_size, NULL, NULL, NULL, napi_default, NULL },
    { "replyDirPlus", NULL, reply_dir_plus, NULL, NULL, NULL, napi_default, NULL },
    { "replyLseek", NULL, reply_lseek, NULL, NULL, NULL, napi_default, NULL },
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
