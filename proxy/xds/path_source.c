/* path_source.c: see path_source.h. */
#include "xds/path_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "config/mapper.h"
#include "config/support.h"
#include "xds/fs_watch.h"

#include "envoy/service/discovery/v3/discovery.pb-c.h"

struct sharp_path_source {
    sharp_fs_watch_t *watch;
};

void sharp_discovery_free(sharp_discovery_t *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->nresources; i++) protobuf_c_message_free_unpacked(d->resources[i], NULL);
    free(d->resources);
    for (size_t i = 0; i < d->nrefused; i++) {
        free(d->refused[i].name);
        free(d->refused[i].why);
        if (d->refused[i].msg) protobuf_c_message_free_unpacked(d->refused[i].msg, NULL);
    }
    free(d->refused);
    free(d->version_info);
    memset(d, 0, sizeof *d);
}

const char *sharp_resource_name(const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "name");
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED) return "";
    const char *v = *(const char *const *)((const char *)m + f->offset);
    return v ? v : "";
}

static int read_source(const char *path, const ProtobufCMessageDescriptor *type, sharp_discovery_t *out,
                       bool *parsed, bool some, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    *parsed = false;
    sharp_config_doc_t *doc = NULL;
    sharp_config_error_t e = {{0}};
    int rc = some ? sharp_config_parse_file_alone(path, &envoy__service__discovery__v3__discovery_response__descriptor,
                                                  "resources", &doc, &e)
                  : sharp_config_parse_file(path, &envoy__service__discovery__v3__discovery_response__descriptor, &doc,
                                            &e);
    if (rc < 0) {
        snprintf(err, errlen, "%s", e.msg);
        return -1;
    }
    *parsed = true;
    /* the resources the parse left out: refused alone, without a message */
    size_t nleft;
    const sharp_config_refused_t *left = sharp_config_doc_refused(doc, &nleft);
    if (nleft) out->refused = sharp_calloc(nleft, sizeof *out->refused);
    for (size_t i = 0; i < nleft; i++)
        out->refused[out->nrefused++] = (sharp_discovery_refusal_t){sharp_strdup(left[i].name),
                                                                    sharp_strdup(left[i].why), NULL};
    const Envoy__Service__Discovery__V3__DiscoveryResponse *r =
        (const Envoy__Service__Discovery__V3__DiscoveryResponse *)sharp_config_doc_message(doc);
    out->version_info = sharp_strdup(r->version_info ? r->version_info : "");
    if (r->n_resources) out->resources = sharp_calloc(r->n_resources, sizeof *out->resources);
    for (size_t i = 0; i < r->n_resources; i++) {
        char where[64];
        snprintf(where, sizeof where, "resources[%zu]", i);
        const char *url = r->resources[i]->type_url ? r->resources[i]->type_url : "";
        const char *slash = strrchr(url, '/');
        if (!slash || strcmp(slash + 1, type->name) != 0) {
            sharp_config_doc_error(doc, where, &e, "Unable to unpack as %s: resource of type %s", type->name,
                                   *url ? url : "<none>");
            goto bad;
        }
        ProtobufCMessage *m = sharp_any_unpack(&r->resources[i]->base, type, &e);
        if (!m) goto bad;
        /* the same support check as the bootstrap: a refused field is refused */
        bool invalid = true;
        if (sharp_config_check_support_kind(m, doc, where, &e, &invalid) < 0) {
            if (!some || invalid) {
                protobuf_c_message_free_unpacked(m, NULL);
                goto bad;
            }
            out->refused = sharp_realloc(out->refused, (out->nrefused + 1) * sizeof *out->refused);
            out->refused[out->nrefused++] =
                (sharp_discovery_refusal_t){sharp_strdup(sharp_resource_name(m)), sharp_strdup(e.msg), m};
            memset(&e, 0, sizeof e);
            continue;
        }
        out->resources[out->nresources++] = m;
    }
    sharp_config_doc_free(doc);
    return 0;
bad:
    snprintf(err, errlen, "%s", e.msg);
    sharp_config_doc_free(doc);
    sharp_discovery_free(out);
    return -1;
}

int sharp_path_source_read(const char *path, const ProtobufCMessageDescriptor *type, sharp_discovery_t *out,
                           bool *parsed, char *err, size_t errlen)
{
    return read_source(path, type, out, parsed, false, err, errlen);
}

int sharp_path_source_read_some(const char *path, const ProtobufCMessageDescriptor *type, sharp_discovery_t *out,
                                bool *parsed, char *err, size_t errlen)
{
    return read_source(path, type, out, parsed, true, err, errlen);
}

sharp_path_source_t *sharp_path_source_watch(uv_loop_t *loop, const char *path, const char *watched_directory,
                                             void (*cb)(void *ud), void *ud, char *err, size_t errlen)
{
    sharp_path_source_t *s = sharp_calloc(1, sizeof *s);
    s->watch = sharp_fs_watch_new(loop, cb, ud, err, errlen);
    if (!s->watch) {
        free(s);
        return NULL;
    }
    int rc = watched_directory
                 ? sharp_fs_watch_add(s->watch, watched_directory, NULL, SHARP_FS_MOVED_TO, err, errlen)
                 : sharp_fs_watch_add_file(s->watch, path, SHARP_FS_MOVED_TO | SHARP_FS_CLOSE_WRITE, err, errlen);
    if (rc < 0) {
        sharp_path_source_free(s);
        return NULL;
    }
    return s;
}

void sharp_path_source_free(sharp_path_source_t *s)
{
    if (!s) return;
    sharp_fs_watch_free(s->watch);
    free(s);
}

int sharp_path_source_check(const char *path, const char *wdir, const char *field, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: paths must refer to an existing path in the system: '%s' does not exist", field,
                 path);
        return -1;
    }
    if (wdir && (stat(wdir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        snprintf(err, errlen, "%s.watched_directory.path: '%s' is not a directory", field, wdir);
        return -1;
    }
    return 0;
}
