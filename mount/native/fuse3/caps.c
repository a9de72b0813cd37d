/*
 * caps.c: the init capabilities JS chooses (writeback cache, zero-message opens, parallel
 * directory operations, splice, request sizes), applied in INIT on `struct fuse_conn_info` and
 * reported back as what was granted. A capability is asked for only where conn->capable has it;
 * one JS leaves out keeps libfuse's default (parallel dirops is on by default, so false turns
 * it off).
 */
#include "reef_fuse3.h"
#include <unistd.h>

static int flag(napi_env env, napi_value obj, const char *key) {
  napi_value v;
  napi_valuetype t;
  bool b;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok ||
      t != napi_boolean) return -1;
  napi_get_value_bool(env, v, &b);
  return b;
}

static unsigned size(napi_env env, napi_value obj, const char *key) {
  napi_value v;
  napi_valuetype t;
  uint32_t n = 0;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok ||
      t != napi_number) return 0;
  napi_get_value_uint32(env, v, &n);
  return n;
}

/* caps: { writebackCache?, noOpen?, noOpendir?, parallelDirops?, splice?, autoInvalData?, maxWrite?, maxRead?,
 * maxBackground?, congestionThreshold?, noSecurityXattrs? }; undefined leaves all defaults. */
bool reef_caps_parse(napi_env env, napi_value obj, reef_caps *c) {
  napi_valuetype t;
  c->writeback_cache = c->no_open = c->no_opendir = c->parallel_dirops = c->splice = c->auto_inval_data = -1;
  c->max_write = c->max_read = c->max_background = c->congestion_threshold = 0;
  c->no_security_xattrs = false;
  if (napi_typeof(env, obj, &t) != napi_ok || t != napi_object) return true;
  c->writeback_cache = flag(env, obj, "writebackCache");
  c->no_open = flag(env, obj, "noOpen");
  c->no_opendir = flag(env, obj, "noOpendir");
  c->parallel_dirops = flag(env, obj, "parallelDirops");
  c->splice = flag(env, obj, "splice");
  c->auto_inval_data = flag(env, obj, "autoInvalData");
  c->max_write = size(env, obj, "maxWrite");
  c->max_read = size(env, obj, "maxRead");
  c->max_background = size(env, obj, "maxBackground");
  c->congestion_threshold = size(env, obj, "congestionThreshold");
  c->no_security_xattrs = flag(env, obj, "noSecurityXattrs") == 1;
  return true;
}

static void want(struct fuse_conn_info *conn, int asked, unsigned cap) {
  if (asked == 1 && (conn->capable & cap)) conn->want |= cap;
  if (asked == 0) conn->want &= ~cap;
}

/* On the loop thread, in INIT, before any other request. */
void reef_caps_apply(reef_session *s, struct fuse_conn_info *conn) {
  const reef_caps *c = &s->caps;
  want(conn, c->writeback_cache, FUSE_CAP_WRITEBACK_CACHE);
  want(conn, c->parallel_dirops, FUSE_CAP_PARALLEL_DIROPS);
  want(conn, c->splice, FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  want(conn, c->auto_inval_data, FUSE_CAP_AUTO_INVAL_DATA);
  if (c->max_write) conn->max_write = c->max_write;
  if (c->max_read) conn->max_read = c->max_read; /* the wrapper also passes -o max_read=N */
  if (c->max_background) conn->max_background = c->max_background;
  if (c->congestion_threshold) conn->congestion_threshold = c->congestion_threshold;
  reef_granted *g = &s->granted;
  g->writeback_cache = conn->want & FUSE_CAP_WRITEBACK_CACHE;
  /* Zero-message opens need no want bit: the kernel turns them on at the first ENOSYS from
   * OPEN/OPENDIR, if it can (capable). */
  g->no_open = c->no_open == 1 && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
  g->no_opendir = c->no_opendir == 1 && (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT);
  /* libfuse before 3.17 never copies this want bit into its INIT reply (the kernel kept
   * serialising lookups in one directory with it "on"), so it is granted only from 3.17. */
  g->parallel_dirops = (conn->want & FUSE_CAP_PARALLEL_DIROPS) && fuse_version() >= 317;
  g->splice_read = conn->want & FUSE_CAP_SPLICE_READ;
  g->splice_write = conn->want & FUSE_CAP_SPLICE_WRITE;
  g->auto_inval_data = conn->want & FUSE_CAP_AUTO_INVAL_DATA;
  /* libfuse clamps max_write after this callback to its buffer: 256 pages (FUSE_MAX_MAX_PAGES). */
  unsigned limit = 256 * (unsigned)getpagesize();
  g->max_write = conn->max_write < limit ? conn->max_write : limit;
  g->max_read = conn->max_read;
  g->max_background = conn->max_background;
  g->congestion_threshold = conn->congestion_threshold;
}

static void put_bool(napi_env env, napi_value obj, const char *key, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  napi_set_named_property(env, obj, key, v);
}

static void put_num(napi_env env, napi_value obj, const char *key, unsigned n) {
  napi_value v;
  napi_create_uint32(env, n, &v);
  napi_set_named_property(env, obj, key, v);
}

napi_value reef_caps_granted(napi_env env, const reef_granted *g) {
  napi_value obj;
  napi_create_object(env, &obj);
  put_bool(env, obj, "writebackCache", g->writeback_cache);
  put_bool(env, obj, "noOpen", g->no_open);
  put_bool(env, obj, "noOpendir", g->no_opendir);
  put_bool(env, obj, "parallelDirops", g->parallel_dirops);
  put_bool(env, obj, "splice", g->splice_read && g->splice_write);
  put_bool(env, obj, "autoInvalData", g->auto_inval_data);
  put_num(env, obj, "maxWrite", g->max_write);
  put_num(env, obj, "maxRead", g->max_read);
  put_num(env, obj, "maxBackground", g->max_background);
  put_num(env, obj, "congestionThreshold", g->congestion_threshold);
  return obj;
}
