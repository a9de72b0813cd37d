/*
 * ring.c: requests to JS. session.c reads /dev/fuse on JS's own thread, so each
 * fuse_lowlevel_ops callback runs there: it copies what the request carries (op, inode, name,
 * offset, size, handle, caller uid/gid/pid) into a reef_req and calls JS's handler at once with
 * a plain object plus an external that reply.c answers, now or later. FORGETs take no answer:
 * they are acknowledged here and passed on as news.
 */
#include "reef_fuse3.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* r->data is the kernel's buffer, borrowed for the callback only: never freed here. */
void reef_req_free(reef_req *r) {
  free(r->name);
  free(r->forgets);
  free(r->name2);
  free(r);
}

static void call_js_req(napi_env env, napi_value js_cb, reef_req *r);

/* Hands r to JS now (we are on JS's thread, inside session.c's callback scope). Without a
 * handler (the connection has ended) a request is answered EIO. */
void reef_req_queue(reef_req *r) {
  reef_session *s = r->s;
  napi_env env = s->env;
  napi_handle_scope hs;
  napi_value cb = NULL;
  if (napi_open_handle_scope(env, &hs) != napi_ok) hs = NULL;
  if (s->handler != NULL && napi_get_reference_value(env, s->handler, &cb) == napi_ok && cb != NULL) {
    call_js_req(env, cb, r);
  } else {
    if (r->req) {
      fuse_reply_err(r->req, EIO);
      reef_session_unref(s);
    }
    reef_req_free(r);
  }
  if (hs != NULL) napi_close_handle_scope(env, hs);
}

reef_req *reef_req_new(fuse_req_t req, enum reef_op op, fuse_ino_t ino) {
  reef_req *r = calloc(1, sizeof *r);
  const struct fuse_ctx *ctx = fuse_req_ctx(req);
  r->s = fuse_req_userdata(req);
  r->req = req;
  r->op = op;
  r->ino = ino;
  r->uid = ctx->uid;
  r->gid = ctx->gid;
  r->pid = ctx->pid;
  atomic_fetch_add(&r->s->refs, 1);
  return r;
}

void reef_req_fi(reef_req *r, struct fuse_file_info *fi) {
  if (fi == NULL) return;
  r->fh = fi->fh;
  r->flags = fi->flags;
}

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  reef_req *r = calloc(1, sizeof *r);
  r->s = userdata;
  reef_caps_apply(r->s, conn);
  r->op = OP_INIT;
  reef_req_queue(r);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  reef_req *r = reef_req_new(req, OP_LOOKUP, parent);
  r->name = strdup(name);
  reef_req_queue(r);
}

static void forget_news(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  reef_req *r = calloc(1, sizeof *r);
  r->s = fuse_req_userdata(req);
  r->op = OP_FORGET;
  r->nforgets = count;
  r->forgets = malloc(count * sizeof *forgets);
  memcpy(r->forgets, forgets, count * sizeof *forgets);
  fuse_reply_none(req);
  reef_req_queue(r);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  struct fuse_forget_data one = { .ino = ino, .nlookup = nlookup };
  forget_news(req, 1, &one);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  forget_news(req, count, forgets);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_GETATTR, ino);
  reef_req_fi(r, fi);
  reef_req_queue(r);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_OPEN, ino);
  reef_req_fi(r, fi);
  reef_req_queue(r);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_OPENDIR, ino);
  reef_req_fi(r, fi);
  reef_req_queue(r);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_READ, ino);
  reef_req_fi(r, fi);
  r->size = size;
  r->off = off;
  reef_req_queue(r);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_READDIR, ino);
  reef_req_fi(r, fi);
  r->size = size;
  r->off = off;
  reef_req_queue(r);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_RELEASE, ino);
  reef_req_fi(r, fi);
  reef_req_queue(r);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  reef_req *r = reef_req_new(req, OP_RELEASEDIR, ino);
  reef_req_fi(r, fi);
  reef_req_queue(r);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  reef_req_queue(reef_req_new(req, OP_STATFS, ino));
}

const struct fuse_lowlevel_ops reef_ll_ops = {
  .init = ll_init,
  .lookup = ll_lookup,
  .forget = ll_forget,
  .forget_multi = ll_forget_multi,
  .getattr = ll_getattr,
  .open = ll_open,
  .read = ll_read,
  .release = ll_release,
  .opendir = ll_opendir,
  .readdir = ll_readdir,
  .releasedir = ll_releasedir,
  .statfs = ll_statfs,
};

static const char *const OP_NAMES[] = {
  [OP_INIT] = "init", [OP_END] = "end", [OP_LOOKUP] = "lookup", [OP_FORGET] = "forget",
  [OP_GETATTR] = "getattr", [OP_READDIR] = "readdir", [OP_OPEN] = "open", [OP_READ] = "read",
  [OP_RELEASE] = "release", [OP_OPENDIR] = "opendir", [OP_RELEASEDIR] = "releasedir",
  [OP_STATFS] = "statfs", [OP_SETATTR] = "setattr", [OP_MKNOD] = "mknod", [OP_MKDIR] = "mkdir",
  [OP_SYMLINK] = "symlink", [OP_READLINK] = "readlink", [OP_LINK] = "link",
  [OP_UNLINK] = "unlink", [OP_RMDIR] = "rmdir", [OP_RENAME] = "rename", [OP_CREATE] = "create",
  [OP_WRITE] = "write", [OP_FLUSH] = "flush", [OP_FSYNC] = "fsync", [OP_FSYNCDIR] = "fsyncdir",
  [OP_SETXATTR] = "setxattr", [OP_GETXATTR] = "getxattr", [OP_LISTXATTR] = "listxattr",
  [OP_REMOVEXATTR] = "removexattr", [OP_ACCESS] = "access", [OP_READDIRPLUS] = "readdirplus",
  [OP_FALLOCATE] = "fallocate", [OP_LSEEK] = "lseek",
};

static void set_num(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

/* The external's finalizer: a request JS dropped without answering gets EIO, not a hang. */
static void unanswered(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  reef_req *r = data;
  if (r->req) {
    fuse_reply_err(r->req, EIO);
    reef_session_unref(r->s);
  }
  reef_req_free(r);
}

static void call_js_req(napi_env env, napi_value js_cb, reef_req *r) {
  napi_value obj, v, undefined;
  napi_get_undefined(env, &undefined);
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, OP_NAMES[r->op], NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, "op", v);
  set_num(env, obj, "ino", (double)r->ino);
  set_num(env, obj, "uid", r->uid);
  set_num(env, obj, "gid", r->gid);
  set_num(env, obj, "pid", r->pid);
  set_num(env, obj, "off", (double)r->off);
  set_num(env, obj, "size", (double)r->size);
  set_num(env, obj, "fh", (double)r->fh);
  set_num(env, obj, "flags", r->flags);
  if (r->name) { /* bytes, not UTF-8: a name is whatever the caller's bytes were */
    napi_create_buffer_copy(env, strlen(r->name), r->name, NULL, &v);
    napi_set_named_property(env, obj, "name", v);
  }
  if (r->op == OP_FORGET) {
    napi_create_array_with_length(env, r->nforgets, &v);
    for (size_t i = 0; i < r->nforgets; i++) {
      napi_value pair, n;
      napi_create_array_with_length(env, 2, &pair);
      napi_create_double(env, (double)r->forgets[i].ino, &n);
      napi_set_element(env, pair, 0, n);
      napi_create_double(env, (double)r->forgets[i].nlookup, &n);
      napi_set_element(env, pair, 1, n);
      napi_set_element(env, v, i, pair);
    }
    napi_set_named_property(env, obj, "forgets", v);
  }
  if (r->op > OP_STATFS) reef_ops_fields(env, obj, r);
  if (r->op == OP_INIT) napi_set_named_property(env, obj, "granted", reef_caps_granted(env, &r->s->granted));
  bool answerable = r->req != NULL; /* then the external owns r */
  if (answerable) {
    napi_create_external(env, r, unanswered, NULL, &v);
    napi_set_named_property(env, obj, "req", v);
  }
  napi_call_function(env, undefined, js_cb, 1, &obj, NULL);
  /* The handler must not throw (the TS wrapper catches); a pending exception is cleared. */
  bool pending;
  napi_is_exception_pending(env, &pending);
  if (pending) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
  }
  if (!answerable) reef_req_free(r);
}
