/* fs_watch.h: watches directories for files moved into them or written in
 * place (Linux inotify on the main loop), for the config sources and
 * secrets that reload from files (xds/path_source.h, tls/sds.h).
 *
 * Envoy's filesystem watcher watches a file's directory, never the file:
 * a file replaced by a rename (the only atomic way to update it) is a new
 * inode, and a Kubernetes ConfigMap or Secret volume swaps a `..data`
 * symlink in the directory. A watch names a directory and, optionally, one
 * entry of it; the callback runs once for every batch of events read
 * (several events of one update arrive together), after which the caller
 * reads the files again. */
#ifndef SHARP_XDS_FS_WATCH_H
#define SHARP_XDS_FS_WATCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The events a watch reacts to. */
#define SHARP_FS_MOVED_TO 0x1u    /* an entry was moved (renamed) into the directory */
#define SHARP_FS_CLOSE_WRITE 0x2u /* an entry opened for writing was closed */

typedef struct sharp_fs_watch sharp_fs_watch_t;
typedef void (*sharp_fs_watch_cb)(void *ud);

/* A watcher on the main loop; its handle does not keep the loop alive.
 * NULL with the reason in err when inotify is not available. */
sharp_fs_watch_t *sharp_fs_watch_new(uv_loop_t *loop, sharp_fs_watch_cb cb, void *ud, char *err, size_t errlen);
/* Watches `dir` for `events` on the entry `name` (NULL: any entry).
 * Returns 0, or -1 with the reason in err (a missing directory). */
int sharp_fs_watch_add(sharp_fs_watch_t *w, const char *dir, const char *name, uint32_t events, char *err,
                       size_t errlen);
/* The same for a file path: its directory, for its last component. */
int sharp_fs_watch_add_file(sharp_fs_watch_t *w, const char *path, uint32_t events, char *err, size_t errlen);
/* Stops and frees the watcher (its memory goes once the handle closed).
 * NULL is fine. */
void sharp_fs_watch_free(sharp_fs_watch_t *w);

#endif
