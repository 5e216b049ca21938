/* fs_watch.c: see fs_watch.h. */
#include "xds/fs_watch.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "common.h"

typedef struct {
    int wd;
    char *name; /* NULL: any entry */
    uint32_t events;
} watch_entry_t;

struct sharp_fs_watch {
    uv_poll_t poll;
    int fd;
    sharp_fs_watch_cb cb;
    void *ud;
    watch_entry_t *entries;
    size_t nentries;
};

static uint32_t to_inotify(uint32_t events)
{
    return ((events & SHARP_FS_MOVED_TO) ? IN_MOVED_TO : 0) | ((events & SHARP_FS_CLOSE_WRITE) ? IN_CLOSE_WRITE : 0);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    sharp_fs_watch_t *w = h->data;
    if (status < 0) return;
    bool fire = false;
    /* drain everything queued: one callback for the whole batch */
    for (;;) {
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t n = read(w->fd, buf, sizeof buf);
        if (n <= 0) break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            for (size_t i = 0; i < w->nentries; i++) {
                const watch_entry_t *e = &w->entries[i];
                if (e->wd != ev->wd || !(to_inotify(e->events) & ev->mask)) continue;
                if (e->name && (!ev->len || strcmp(e->name, ev->name) != 0)) continue;
                fire = true;
            }
        }
    }
    if (fire) w->cb(w->ud);
}

sharp_fs_watch_t *sharp_fs_watch_new(uv_loop_t *loop, sharp_fs_watch_cb cb, void *ud, char *err, size_t errlen)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "inotify_init1: %s", strerror(errno));
        return NULL;
    }
    sharp_fs_watch_t *w = sharp_calloc(1, sizeof *w);
    w->fd = fd;
    w->cb = cb;
    w->ud = ud;
    int rc = uv_poll_init(loop, &w->poll, fd);
    if (rc < 0) {
        snprintf(err, errlen, "cannot poll inotify: %s", uv_strerror(rc));
        close(fd);
        free(w);
        return NULL;
    }
    w->poll.data = w;
    uv_poll_start(&w->poll, UV_READABLE, on_readable);
    uv_unref((uv_handle_t *)&w->poll); /* never what keeps the loop running */
    return w;
}

int sharp_fs_watch_add(sharp_fs_watch_t *w, const char *dir, const char *name, uint32_t events, char *err,
                       size_t errlen)
{
    /* one kernel watch per directory: adding it again returns the same wd
     * (IN_MASK_ADD keeps the events other entries asked for) */
    int wd = inotify_add_watch(w->fd, dir, to_inotify(events) | IN_MASK_ADD);
    if (wd < 0) {
        snprintf(err, errlen, "cannot watch directory %s: %s", dir, strerror(errno));
        return -1;
    }
    w->entries = sharp_realloc(w->entries, (w->nentries + 1) * sizeof *w->entries);
    w->entries[w->nentries++] = (watch_entry_t){wd, name ? sharp_strdup(name) : NULL, events};
    return 0;
}

int sharp_fs_watch_add_file(sharp_fs_watch_t *w, const char *path, uint32_t events, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    const char *name = path;
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else {
        name = path + (slash - dir) + 1;
        if (slash == dir) dir[1] = '\0';
        else *slash = '\0';
    }
    return sharp_fs_watch_add(w, dir, *name ? name : NULL, events, err, errlen);
}

static void on_closed(uv_handle_t *h)
{
    sharp_fs_watch_t *w = h->data;
    close(w->fd);
    for (size_t i = 0; i < w->nentries; i++) free(w->entries[i].name);
    free(w->entries);
    free(w);
}

void sharp_fs_watch_free(sharp_fs_watch_t *w)
{
    if (!w) return;
    uv_poll_stop(&w->poll);
    uv_close((uv_handle_t *)&w->poll, on_closed);
}
