{
  "targets": [{
    "target_name": "reef_fuse3",
    "sources": ["session.c", "ring.c", "ops.c", "reply.c", "caps.c", "notify.c"],
    "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "<!@(pkg-config --cflags fuse3)"],
    "libraries": ["<!@(pkg-config --libs fuse3)"]
  }]
}
