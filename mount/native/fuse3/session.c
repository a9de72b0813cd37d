/*
 * session.c: the FUSE session and its thread, and the module's entry point. mount() creates a
 * low-level session on the JS thread and starts one loop thread that only reads /dev/fuse and
 * queues requests (ring.c); it never waits on JS, so one thread is enough. When the kernel ends
 * the connection (fusermount3 -u, umount) the loop ends and JS hears { op: 'end' }.
 */
#include "reef_fuse3.h"
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
  napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
  free(s->mountpoint);
  free(s);
}

static void *loop_thread(void *arg) {
  reef_session *s = arg;
  s->loop_result = fuse_session_loop(s->se);
  reef_req *end = calloc(1, sizeof *end);
  end->s = s;
  end->op = OP_END;
  /* Unbounded queue, released only after OP_END is handled: this call cannot be refused. */
  napi_call_threadsafe_function(s->tsfn, end, napi_tsfn_blocking);
  return NULL;
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
  NAPI_OK(env, napi_create_string_utf8(env, "reef-fuse3", NAPI_AUTO_LENGTH, &name));
  NAPI_OK(env, napi_create_threadsafe_function(env, argv[2], NULL, name, 0, 1, NULL, NULL, s,
                                               reef_ring_call_js, &s->tsfn));
  atomic_store(&s->refs, 1);
  if (!reef_notify_start(env, s, argv[5]) || pthread_create(&s->thread, NULL, loop_thread, s) != 0) {
    reef_notify_stop(s);
    fuse_session_unmount(s->se);
    reef_session_unref(s);
    napi_throw_error(env, "EAGAIN", "cannot start the FUSE thread");
    return NULL;
  }
  napi_value out;
  NAPI_OK(env, napi_create_external(env, s, NULL, NULL, &out));
  return out;
}

/* unmount(session): detaches the mount (lazily); the kernel ends the connection once nothing
 * uses the file system any more, and the loop then ends on its own. Not fuse_session_unmount
 * here: it closes /dev/fuse, and the answers to requests JS still holds would be lost, leaving
 * their callers waiting forever. reef_session_ended closes it once the connection is gone. */
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

/* Called on the JS thread for OP_END: the loop thread has finished. */
void reef_session_ended(reef_session *s) {
  pthread_join(s->thread, NULL);
  reef_notify_stop(s);
  fuse_session_unmount(s->se);
  reef_session_unref(s);
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
