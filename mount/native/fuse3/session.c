/*
 * session.c: the FUSE session and the module's entry point. mount() creates a low-level session
 * and polls its /dev/fuse fd (non-blocking) on JS's own event loop: when the kernel has requests,
 * they are read and handed to JS on that thread (ring.c), one per wake-up. There is no
 * loop thread between the kernel and JS: each request costs one thread wake-up (the kernel
 * waking JS), not two (the kernel waking a loop thread, that thread waking JS), which on this
 * class of machine is most of a small request's round trip. When the kernel ends the connection
 * (fusermount3 -u, umount) JS hears { op: 'end' }.
 */
#include "reef_fuse3.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

void reef_session_unref(reef_session *s) {
  if (atomic_fetch_sub(&s->refs, 1) != 1) return;
  fuse_session_destroy(s->se);
  free(s->buf.mem);
  free(s->mountpoint);
  free(s);
}

static void poll_closed(uv_handle_t *h) { free(h); }

/* The connection is gone (or this session was told to exit): stop polling, tell JS, let the
 * notify thread finish, close /dev/fuse and drop the connection's hold on the session. Requests
 * JS still holds keep the session alive; answered after this, they go nowhere. */
static void ended(reef_session *s) {
  napi_env env = s->env;
  uv_poll_stop(s->poll);
  uv_close((uv_handle_t *)s->poll, poll_closed);
  s->poll = NULL;
  reef_req *end = calloc(1, sizeof *end);
  end->s = s;
  end->op = OP_END;
  reef_req_queue(end);
  napi_delete_reference(env, s->handler);
  s->handler = NULL;
  napi_async_destroy(env, s->actx);
  reef_notify_stop(s);
  fuse_session_unmount(s->se);
  reef_session_unref(s);
}

static void readable(uv_poll_t *h, int status, int events) {
  (void)events;
  reef_session *s = h->data;
  napi_env env = s->env;
  napi_handle_scope hs;
  napi_callback_scope scope;
  napi_value resource;
  if (napi_open_handle_scope(env, &hs) != napi_ok) return;
  napi_create_object(env, &resource);
  /* One callback scope per wake-up: promise jobs and nextTicks the handler queued run when it
   * closes, as after any other callback from the event loop. */
  bool scoped = napi_open_callback_scope(env, resource, s->actx, &scope) == napi_ok;
  bool end = status < 0 && status != UV_EINTR && status != UV_EAGAIN;
  /* One request per wake-up (the fd is level-triggered: another queued wakes it again at once).
   * Reading on until EAGAIN cost one more read(2) per wake-up, and a sequential caller has one
   * request at a time. 2,000-file create loops, alternating builds (2026-12-08): the daemon's
   * main thread 330-386 us per file against 363-563 reading up to 32, fstat 38 against 41 us.
   * System calls are dear on this kind of VM: a perf profile of the daemon's thread during
   * creates had 24% in the kernel's pvm_irq_enable alone. EINTR and EAGAIN: woken again. */
  if (!end) {
    int res = fuse_session_receive_buf(s->se, &s->buf);
    if (res > 0) {
      fuse_session_process_buf(s->se, &s->buf);
      end = fuse_session_exited(s->se);
    } else if (res != -EINTR && res != -EAGAIN) {
      end = true;
    }
  }
  if (end) ended(s);
  if (scoped) napi_close_callback_scope(env, scope);
  napi_close_handle_scope(env, hs);
}

static bool has_flag(napi_env env, napi_value obj, const char *key) {
  napi_value v;
  bool b = false;
  if (napi_get_named_property(env, obj, key, &v) == napi_ok) napi_get_value_bool(env, v, &b);
  return b;
}

/* mount(mountpoint, options: string[], handler: (req) => void,
 *       has: { readdirplus, fallocate, lseek }, caps: object | undefined,
 *       notified: (id, result) => void): session.
 * An optional op JS has no handler for stays unset: without readdirplus libfuse does not offer
 * the kernel READDIRPLUS; without fallocate/lseek libfuse answers ENOSYS itself. */
static napi_value mount_js(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char mountpoint[4096];
  size_t len;
  NAPI_OK(env, napi_get_value_string_utf8(env, argv[0], mountpoint, sizeof mountpoint, &len));
  uint32_t nopts;
  NAPI_OK(env, napi_get_array_length(env, argv[1], &nopts));

  struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
  fuse_opt_add_arg(&args, "reef");
  for (uint32_t i = 0; i < nopts; i++) {
    napi_value v;
    char opt[1024];
    NAPI_OK(env, napi_get_element(env, argv[1], i, &v));
    NAPI_OK(env, napi_get_value_string_utf8(env, v, opt, sizeof opt, &len));
    fuse_opt_add_arg(&args, "-o");
    fuse_opt_add_arg(&args, opt);
  }

  if (argc < 6) {
    fuse_opt_free_args(&args);
    napi_throw_type_error(env, NULL, "mount(mnt, options, handler, has, caps, notified)");
    return NULL;
  }
  reef_has has = {
    .readdirplus = has_flag(env, argv[3], "readdirplus"),
    .fallocate = has_flag(env, argv[3], "fallocate"),
    .lseek = has_flag(env, argv[3], "lseek"),
  };
  struct fuse_lowlevel_ops ops = reef_ll_ops; /* fuse_session_new copies it */
  reef_ops_add(&ops, &has);

  reef_session *s = calloc(1, sizeof *s);
  reef_caps_parse(env, argv[4], &s->caps);
  s->mountpoint = strdup(mountpoint);
  s->se = fuse_session_new(&args, &ops, sizeof ops, s);
  fuse_opt_free_args(&args);
  if (s->se == NULL) {
    free(s);
    napi_throw_error(env, "EINVAL", "fuse_session_new failed (bad mount options?)");
    return NULL;
  }
  if (fuse_session_mount(s->se, mountpoint) != 0) {
    fuse_session_destroy(s->se);
    free(s);
    napi_throw_error(env, "EMOUNT", "fuse_session_mount failed");
    return NULL;
  }
  napi_value name;
  uv_loop_t *loop = NULL;
  int fd = fuse_session_fd(s->se);
  s->env = env;
  atomic_store(&s->refs, 1);
  s->poll = calloc(1, sizeof *s->poll);
  bool ok = napi_create_string_utf8(env, "reef-fuse3", NAPI_AUTO_LENGTH, &name) == napi_ok &&
            napi_async_init(env, NULL, name, &s->actx) == napi_ok &&
            napi_create_reference(env, argv[2], 1, &s->handler) == napi_ok &&
            napi_get_uv_event_loop(env, &loop) == napi_ok &&
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0 &&
            uv_poll_init(loop, s->poll, fd) == 0;
  if (ok) {
    s->poll->data = s;
    ok = reef_notify_start(env, s, argv[5]) && uv_poll_start(s->poll, UV_READABLE, readable) == 0;
    if (!ok) uv_close((uv_handle_t *)s->poll, poll_closed);
  } else {
    free(s->poll);
  }
  if (!ok) {
    reef_notify_stop(s);
    if (s->handler != NULL) napi_delete_reference(env, s->handler);
    if (s->actx != NULL) napi_async_destroy(env, s->actx);
    fuse_session_unmount(s->se);
    reef_session_unref(s);
    napi_throw_error(env, "EAGAIN", "cannot poll the FUSE connection");
    return NULL;
  }
  napi_value out;
  NAPI_OK(env, napi_create_external(env, s, NULL, NULL, &out));
  return out;
}

/* unmount(session): detaches the mount (lazily); the kernel ends the connection once nothing
 * uses the file system any more, and polling then ends on its own. Not fuse_session_unmount
 * here: it closes /dev/fuse, and the answers to requests JS still holds would be lost, leaving
 * their callers waiting forever. ended() closes it once the connection is gone. */
static napi_value unmount_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  reef_session *s;
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  NAPI_OK(env, napi_get_value_external(env, argv[0], (void **)&s));
  fuse_session_exit(s->se);
  if (geteuid() == 0) {
    umount2(s->mountpoint, MNT_DETACH);
    return NULL;
  }
  char *args[] = { "fusermount3", "-u", "-z", "--", s->mountpoint, NULL };
  pid_t pid;
  if (posix_spawnp(&pid, "fusermount3", NULL, NULL, args, environ) == 0) waitpid(pid, NULL, 0);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "mount", NULL, mount_js, NULL, NULL, NULL, napi_default, NULL },
    { "unmount", NULL, unmount_js, NULL, NULL, NULL, napi_default, NULL },
  };
  NAPI_OK(env, napi_define_properties(env, exports, 2, props));
  reef_notify_exports(env, exports);
  return reef_reply_exports(env, exports);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
