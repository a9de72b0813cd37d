/*
 * notify.c: kernel cache invalidations asked by JS (fuse_lowlevel_notify_inval_inode,
 * _inval_entry, _delete), sent from one notify thread per session, never from the JS thread.
 * The kernel handles inval_entry and delete under the parent directory's lock; a LOOKUP in that
 * directory holds the lock while it waits for JS's answer, so a notification sent synchronously
 * from the JS thread would wait for an answer only the JS thread can give: a deadlock. Here JS
 * only appends to a list and signals a condvar; the thread sends, then reports each result back
 * through a second threadsafe function, so JS can await "the kernel has processed it".
 */
#include "reef_fuse3.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum notice_kind { INVAL_INODE, INVAL_ENTRY, DELETE_ENTRY };

typedef struct reef_notice {
  struct reef_notice *next;
  enum notice_kind kind;
  double id;              /* JS's handle for the completion */
  fuse_ino_t ino, child;  /* inval_inode: ino; entry ops: ino is the parent */
  off_t off, len;
  char *name;
  size_t namelen;
  int result;             /* 0 or -errno from libfuse */
} reef_notice;

struct reef_notify_queue {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  reef_notice *head, *tail;
  bool stop;
  pthread_t thread;
  napi_threadsafe_function done;
};

static int send_notice(struct fuse_session *se, const reef_notice *n) {
  switch (n->kind) {
    case INVAL_INODE: return fuse_lowlevel_notify_inval_inode(se, n->ino, n->off, n->len);
    case INVAL_ENTRY: return fuse_lowlevel_notify_inval_entry(se, n->ino, n->name, n->namelen);
    case DELETE_ENTRY: return fuse_lowlevel_notify_delete(se, n->ino, n->child, n->name, n->namelen);
  }
  return -EINVAL;
}

static void *notify_thread(void *arg) {
  reef_session *s = arg;
  struct reef_notify_queue *q = s->notify;
  for (;;) {
    pthread_mutex_lock(&q->mu);
    while (q->head == NULL && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
    reef_notice *n = q->head;
    if (n != NULL) {
      q->head = n->next;
      if (q->head == NULL) q->tail = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    if (n == NULL) return NULL; /* stopped, and everything queued was sent */
    n->result = send_notice(s->se, n);
    if (napi_call_threadsafe_function(q->done, n, napi_tsfn_nonblocking) != napi_ok) {
      free(n->name);
      free(n);
    }
  }
}

/* On the JS thread: done(id, result) for each notice the thread sent. */
static void call_js_done(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)context;
  reef_notice *n = data;
  if (env != NULL) {
    napi_value argv[2], undefined;
    napi_get_undefined(env, &undefined);
    napi_create_double(env, n->id, &argv[0]);
    napi_create_int32(env, n->result, &argv[1]);
    napi_call_function(env, undefined, js_cb, 2, argv, NULL);
    bool pending;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
    }
  }
  free(n->name);
  free(n);
}

bool reef_notify_start(napi_env env, reef_session *s, napi_value on_done) {
  struct reef_notify_queue *q = calloc(1, sizeof *q);
  napi_value name;
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  napi_create_string_utf8(env, "reef-fuse3-notify", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, on_done, NULL, name, 0, 1, NULL, NULL, NULL,
                                      call_js_done, &q->done) != napi_ok) {
    free(q);
    return false;
  }
  s->notify = q;
  if (pthread_create(&q->thread, NULL, notify_thread, s) != 0) {
    napi_release_threadsafe_function(q->done, napi_tsfn_abort);
    s->notify = NULL;
    free(q);
    return false;
  }
  return true;
}

/* On the JS thread once the loop has ended: sends what is queued (the kernel answers at once
 * now that the connection is gone), stops the thread and lets the done function go. */
void reef_notify_stop(reef_session *s) {
  struct reef_notify_queue *q = s->notify;
  if (q == NULL) return;
  pthread_mutex_lock(&q->mu);
  q->stop = true;
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
  pthread_join(q->thread, NULL);
  napi_release_threadsafe_function(q->done, napi_tsfn_release);
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cv);
  s->notify = NULL;
  free(q);
}

static void push(reef_session *s, reef_notice *n) {
  struct reef_notify_queue *q = s->notify;
  pthread_mutex_lock(&q->mu);
  if (q->tail) q->tail->next = n;
  else q->head = n;
  q->tail = n;
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

/* A name from JS (Uint8Array bytes, or a string as UTF-8), copied; false with an error thrown. */
static bool name_copy(napi_env env, napi_value v, reef_notice *n) {
  napi_valuetype t;
  bool ta = false;
  if (napi_typeof(env, v, &t) == napi_ok && t == napi_string) {
    napi_get_value_string_utf8(env, v, NULL, 0, &n->namelen);
    n->name = malloc(n->namelen + 1);
    napi_get_value_string_utf8(env, v, n->name, n->namelen + 1, &n->namelen);
    return true;
  }
  if (napi_is_typedarray(env, v, &ta) == napi_ok && ta) {
    napi_typedarray_type type;
    void *data;
    napi_get_typedarray_info(env, v, &type, &n->namelen, &data, NULL, NULL);
    if (type == napi_uint8_array) {
      n->name = malloc(n->namelen + 1);
      memcpy(n->name, data, n->namelen);
      n->name[n->namelen] = 0;
      return true;
    }
  }
  napi_throw_type_error(env, NULL, "a name is not a string or Uint8Array");
  return false;
}

/* notify(session, id, kind, ino, a, b, name?): kind 0 inval_inode(ino, off=a, len=b),
 * 1 inval_entry(parent=ino, name), 2 delete(parent=ino, child=a, name). Returns at once; the
 * session's done callback gets (id, result) once the kernel has processed it. */
static napi_value notify(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  reef_session *s;
  int32_t kind;
  double ino, a, b;
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  NAPI_OK(env, napi_get_value_external(env, argv[0], (void **)&s));
  if (s->notify == NULL) {
    napi_throw_error(env, "ENOTCONN", "the FUSE session has ended");
    return NULL;
  }
  reef_notice *n = calloc(1, sizeof *n);
  napi_get_value_double(env, argv[1], &n->id);
  napi_get_value_int32(env, argv[2], &kind);
  napi_get_value_double(env, argv[3], &ino);
  napi_get_value_double(env, argv[4], &a);
  napi_get_value_double(env, argv[5], &b);
  n->kind = (enum notice_kind)kind;
  n->ino = (fuse_ino_t)ino;
  if (n->kind == INVAL_INODE) {
    n->off = (off_t)a;
    n->len = (off_t)b;
  } else {
    n->child = (fuse_ino_t)a;
    if (argc < 7 || !name_copy(env, argv[6], n)) {
      free(n);
      return NULL;
    }
  }
  push(s, n);
  return NULL;
}

napi_value reef_notify_exports(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "notify", NULL, notify, NULL, NULL, NULL, napi_default, NULL },
  };
  NAPI_OK(env, napi_define_properties(env, exports, 1, props));
  return exports;
}
