/*
 * reef_fuse3.h: what the addon's files share. A session (session.c) owns the libfuse3 low-level
 * session; JS's own event loop polls its /dev/fuse fd, and each kernel request becomes a reef_req
 * handed to JS on that thread (ring.c) and answered once from JS (reply.c). A session lives while
 * its connection does or any request is unanswered, so a late reply never touches a destroyed
 * fuse_session.
 */
#ifndef REEF_FUSE3_H
#define REEF_FUSE3_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

enum reef_op {
  OP_INIT, OP_END, OP_LOOKUP, OP_FORGET, OP_GETATTR, OP_READDIR, OP_OPEN, OP_READ,
  OP_RELEASE, OP_OPENDIR, OP_RELEASEDIR, OP_STATFS,
  /* ops.c */
  OP_SETATTR, OP_MKNOD, OP_MKDIR, OP_SYMLINK, OP_READLINK, OP_LINK, OP_UNLINK, OP_RMDIR,
  OP_RENAME, OP_CREATE, OP_WRITE, OP_FLUSH, OP_FSYNC, OP_FSYNCDIR, OP_SETXATTR, OP_GETXATTR,
  OP_LISTXATTR, OP_REMOVEXATTR, OP_ACCESS, OP_READDIRPLUS, OP_FALLOCATE, OP_LSEEK, OP_COUNT
};

/* Which optional handlers JS has (mount()'s 4th argument). */
typedef struct reef_has {
  bool readdirplus, fallocate, lseek;
} reef_has;

/* The init capabilities JS asked for (mount()'s 5th argument; caps.c). A flag is -1 when JS
 * left it to libfuse's default, else 0/1; a size is 0 when left to the default. */
typedef struct reef_caps {
  int writeback_cache, no_open, no_opendir, parallel_dirops, splice, auto_inval_data;
  unsigned max_write, max_read, max_background, congestion_threshold;
  bool no_security_xattrs; /* security.* and system.* getxattr answered ENODATA in C */
} reef_caps;

/* What the kernel and libfuse granted, filled in at INIT (on the loop thread, before any
 * request, read on the JS thread when OP_INIT arrives). */
typedef struct reef_granted {
  bool writeback_cache, no_open, no_opendir, parallel_dirops, splice_read, splice_write, auto_inval_data;
  unsigned max_write, max_read, max_background, congestion_threshold;
} reef_granted;

struct reef_notify_queue;

typedef struct reef_session {
  struct fuse_session *se;
  napi_env env;
  napi_ref handler;     /* JS's request handler; NULL once the connection ended */
  napi_async_context actx;
  uv_poll_t *poll;      /* readable /dev/fuse on JS's loop; NULL once stopped */
  struct fuse_buf buf;  /* one request at a time, reused */
  atomic_int refs;      /* 1 for the connection + 1 per unanswered request */
  reef_caps caps;
  reef_granted granted;
  struct reef_notify_queue *notify; /* notify.c */
  char *mountpoint;
} reef_session;

typedef struct reef_req {
  reef_session *s;
  fuse_req_t req;       /* NULL once answered (or for ops that take no answer) */
  enum reef_op op;
  fuse_ino_t ino;
  char *name;
  off_t off;
  size_t size;
  uint64_t fh;
  int flags;           /* open flags, or RENAME_*, XATTR_*, fsync's datasync, access's mask */
  uid_t uid;
  gid_t gid;
  pid_t pid;
  size_t nforgets;      /* OP_FORGET: (ino, nlookup) pairs, one for FORGET, many for BATCH_FORGET */
  struct fuse_forget_data *forgets;
  /* ops.c's requests */
  fuse_ino_t ino2;      /* rename's and link's new parent */
  char *name2;          /* rename's and link's new name, symlink's target, an xattr's name */
  mode_t mode;
  dev_t rdev;
  const void *data;     /* write's bytes, setxattr's value: the kernel's buffer, during the callback only */
  size_t datalen;
  int to_set;           /* setattr: FUSE_SET_ATTR_* bits; attr holds the values they name */
  struct stat attr;
  int has_fh;           /* setattr: the kernel named an open handle (ftruncate, futimens) */
} reef_req;

/* session.c */
void reef_session_unref(reef_session *s);

/* ring.c */
extern const struct fuse_lowlevel_ops reef_ll_ops;
void reef_req_free(reef_req *r);
reef_req *reef_req_new(fuse_req_t req, enum reef_op op, fuse_ino_t ino);
void reef_req_fi(reef_req *r, struct fuse_file_info *fi);
void reef_req_queue(reef_req *r);

/* ops.c */
void reef_ops_add(struct fuse_lowlevel_ops *ops, const reef_has *has);
void reef_ops_fields(napi_env env, napi_value obj, reef_req *r);

/* caps.c */
bool reef_caps_parse(napi_env env, napi_value obj, reef_caps *caps);
void reef_caps_apply(reef_session *s, struct fuse_conn_info *conn);
napi_value reef_caps_granted(napi_env env, const reef_granted *g);

/* notify.c */
bool reef_notify_start(napi_env env, reef_session *s, napi_value on_done);
void reef_notify_stop(reef_session *s);
napi_value reef_notify_exports(napi_env env, napi_value exports);

/* reply.c */
napi_value reef_reply_exports(napi_env env, napi_value exports);
reef_req *reef_req_take(napi_env env, napi_value external);

#define NAPI_OK(env, call)                                                   \
  do {                                                                       \
    if ((call) != napi_ok) {                                                 \
      napi_throw_type_error((env), NULL, "reef fuse3: N-API call failed: " #call); \
      return NULL;                                                           \
    }                                                                        \
  } while (0)

#endif
