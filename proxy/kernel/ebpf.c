/* ebpf.c: loading the probes and reading their maps (ebpf.h). */
#include "kernel/ebpf.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#ifdef SHARP_HAVE_BPF

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sharp_tcp.skel.h"

/* A freed slot of `counters` is given again only this long after its
 * remote left (its counters zeroed, its remote cleared): a program that
 * found the slot still its remote's has long finished adding to it (a
 * tracepoint's program runs with preemption off, for microseconds; the
 * socket walk runs in the main thread, which frees and gives slots). */
#define SLOT_QUARANTINE_NS (100ull * 1000 * 1000)

struct sharp_kernel_bpf {
    struct sharp_tcp *skel;
    int remotes_fd, counters_fd, ports_fd;
    uint32_t max_remotes; /* the remotes table's size (size_remotes) */
    /* the slots of `counters`: [0, slots_used) were given at least once;
     * the freed ones wait in a ring, oldest first, with when they were
     * freed (SLOT_QUARANTINE_NS) */
    uint32_t slots_used;
    uint32_t *free_slots;
    uint64_t *freed_ns;
    uint32_t free_head, nfree;
    uint32_t tag_sets;    /* the tags table's sets (size_tags; tagged design) */
    /* the tags table mapped read-only (tagged design; NULL if it cannot be) */
    const struct sharp_tcp_tag_set *tags;
    size_t tags_len;
    /* the ports map's bits, and how many watched remotes use each port */
    struct sharp_tcp_ports ports;
    uint32_t *port_refs;
    int ncpus;
    struct sharp_tcp_slot *percpu; /* ncpus values, a lookup's buffer */
    /* batch lookups: up to `chunk` slots and their per-CPU values */
    uint32_t chunk;
    uint32_t *bkeys;
    struct sharp_tcp_slot *bvalues;
    char probes[256];
    bool tagged; /* the tagged-socket design (BTF tracepoints and the TCP iterator) */
    bool raw;    /* attached as raw tracepoints */
    bool btf;    /* tcp:tcp_probe as a BTF-enabled raw tracepoint */
    bool no_batch_update; /* the kernel has no batch updates and deletes */
};

/* libbpf explains each failure over several lines; they go to the debug
 * log, and SHARP says once, at info level, why it falls back. */
static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    if (level == LIBBPF_DEBUG) return 0;
    char line[8192]; /* a verifier log comes as one message */
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = '\0';
    sharp_debug(main, "libbpf: %s", line);
    return 0;
}

/* Whether the running kernel describes a type (a tracepoint's record) in
 * its BTF: tcp:tcp_probe exists since 4.16, and the probe's CO-RE reads
 * need its layout. */
static bool kernel_has_struct(const struct btf *vmlinux, const char *name)
{
    return vmlinux && btf__find_by_name_kind(vmlinux, name, BTF_KIND_STRUCT) > 0;
}

static void add_probe(sharp_kernel_bpf_t *b, const char *name)
{
    size_t n = strlen(b->probes);
    snprintf(b->probes + n, sizeof b->probes - n, "%s%s", n ? ", " : "", name);
}

/* Whether the raw tracepoint `name` passes n arguments (its
 * btf_trace_<name> typedef: a pointer to a function whose first parameter
 * is the tracepoint's data, then the arguments). */
static bool raw_tp_nargs(const struct btf *vmlinux, const char *name, unsigned n)
{
    char tname[128];
    snprintf(tname, sizeof tname, "btf_trace_%s", name);
    int id = vmlinux ? btf__find_by_name_kind(vmlinux, tname, BTF_KIND_TYPEDEF) : -1;
    if (id <= 0) return false;
    const struct btf_type *t = btf__type_by_id(vmlinux, btf__type_by_id(vmlinux, id)->type); /* the pointer */
    if (!t || !btf_is_ptr(t)) return false;
    t = btf__type_by_id(vmlinux, t->type);
    return t && btf_is_func_proto(t) && btf_vlen(t) == n + 1;
}

/* One program of each flavour per tracepoint. */
typedef struct {
    const char *tracepoint; /* "category:name" */
    size_t raw, classic;    /* offsets of the programs in the skeleton's progs */
    size_t raw_link, classic_link;
    bool rtt;               /* one of the two RTT sources */
    const char *rtt_name;   /* its event name */
} probe_t;

#define PROG(f) offsetof(struct sharp_tcp, progs.f)
#define LINK(f) offsetof(struct sharp_tcp, links.f)
#define P(tp, raw, cl, rtt, ev) {tp, PROG(raw), PROG(cl), LINK(raw), LINK(cl), rtt, ev}
static const probe_t probes[] = {
    P("tcp:tcp_retransmit_skb", sharp_raw_tcp_retransmit_skb, sharp_tcp_retransmit_skb, false, NULL),
    P("sock:inet_sock_set_state", sharp_raw_inet_sock_set_state, sharp_inet_sock_set_state, false, NULL),
    P("tcp:tcp_receive_reset", sharp_raw_tcp_receive_reset, sharp_tcp_receive_reset, false, NULL),
    P("tcp:tcp_send_reset", sharp_raw_tcp_send_reset, sharp_tcp_send_reset, false, NULL),
    P("tcp:tcp_probe", sharp_raw_tcp_probe, sharp_tcp_probe, true, "tcp_probe"),
    P("tcp:tcp_rcv_space_adjust", sharp_raw_tcp_rcv_space_adjust, sharp_tcp_rcv_space_adjust, true,
      "tcp_rcv_space_adjust"),
};
#undef P

/* The tagged-socket design's tracepoints (BTF-enabled); the TCP iterator
 * comes beside them. */
typedef struct {
    const char *tracepoint;
    size_t prog, link;
} tagged_probe_t;

static const tagged_probe_t tagged_probes[] = {
    {"tcp:tcp_retransmit_skb", PROG(sharp_tag_retransmit_skb), LINK(sharp_tag_retransmit_skb)},
    {"sock:inet_sock_set_state", PROG(sharp_tag_set_state), LINK(sharp_tag_set_state)},
    {"tcp:tcp_receive_reset", PROG(sharp_tag_receive_reset), LINK(sharp_tag_receive_reset)},
    {"tcp:tcp_send_reset", PROG(sharp_tag_send_reset), LINK(sharp_tag_send_reset)},
};

static struct bpf_program *prog_at(struct sharp_tcp *skel, size_t off)
{
    return *(struct bpf_program **)((char *)skel + off);
}

/* Walks the TCP sockets of SHARP's network namespace with the iterator
 * (its program samples the tagged ones): 0, or a negative errno. */
static int run_iter(sharp_kernel_bpf_t *b)
{
    int fd = bpf_iter_create(bpf_link__fd(b->skel->links.sharp_iter_tcp));
    if (fd < 0) return -errno;
    char buf[64]; /* the program writes nothing: one read runs the walk */
    ssize_t n;
    do {
        n = read(fd, buf, sizeof buf);
    } while (n > 0 || (n < 0 && errno == EINTR));
    int rc = n < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* Opens, loads and attaches the tagged-socket design: BTF-enabled
 * tracepoints on SHARP's own (tagged) sockets and the TCP iterator, no
 * program per segment. 0, or -1 with the reason. */
/* `remotes` and `counters` are preallocated, sized at load from a memory budget. Without
 * preallocation each remote added costs the kernel's per-CPU allocator
 * some 40-60 us and each removed one 20-30 us (measured on this design's
 * maps; 0.6 us preallocated): an EDS push replacing 500 endpoints took a
 * third of the main thread's CPU, and the allocator's locks stalled the
 * workers' requests (p99 4.6x with one such push a second; with the probes
 * off, no change). A preallocated remote costs its key and slot, the hash
 * table's overhead and one slot (its remote and counters) per possible
 * CPU, so the tables hold
 * SHARP_TCP_REMOTES_BUDGET bytes' worth, between 1,024 and
 * SHARP_TCP_MAX_REMOTES remotes; beyond it a remote is not watched (said
 * once in the log, /kernel's `watched` stops growing). */
#define SHARP_TCP_REMOTES_BUDGET (8u << 20)

static void size_remotes(sharp_kernel_bpf_t *b)
{
    struct bpf_map *m = b->skel->maps.remotes;
    int ncpus = libbpf_num_possible_cpus();
    if (ncpus < 1) ncpus = 1;
    size_t per = sizeof(struct sharp_tcp_remote) + sizeof(uint32_t) + 64 +
                 (size_t)ncpus * ((sizeof(struct sharp_tcp_slot) + 7) & ~7u);
    size_t n = SHARP_TCP_REMOTES_BUDGET / per;
    if (n < 1024) n = 1024;
    if (n > SHARP_TCP_MAX_REMOTES) n = SHARP_TCP_MAX_REMOTES;
    bpf_map__set_max_entries(m, (uint32_t)n);
    bpf_map__set_map_flags(m, bpf_map__map_flags(m) & ~(uint32_t)BPF_F_NO_PREALLOC);
    bpf_map__set_max_entries(b->skel->maps.counters, (uint32_t)n);
    b->max_remotes = (uint32_t)n;
}

/* The tagged design's table of SHARP's upstream sockets, preallocated
 * (an array) and sized once from its own budget: SHARP_TCP_TAG_WAYS ways a
 * set, a power of two of sets, between SHARP_TCP_MIN_TAG_SETS and
 * SHARP_TCP_MAX_TAG_SETS. 2 MiB take 8,192 sets (2 MiB: a set is the
 * line of its 8 tags and three of its ways' state, each with the slot of
 * its remote's counters), 65,536
 * sockets' ways: with 10,000 upstream connections open at once the table
 * is 15% full, and a connection whose set is full (it then takes the way
 * of the set's oldest one, counted in tag_failures) is rare (SHARP's
 * connections of a thread take consecutive sets). The socket storage it
 * replaces took some 260 bytes a connection. */
#define SHARP_TCP_TAGS_BUDGET (2u << 20)

static void size_tags(sharp_kernel_bpf_t *b, struct bpf_map *m)
{
    uint32_t n = SHARP_TCP_MIN_TAG_SETS;
    while (n < SHARP_TCP_MAX_TAG_SETS &&
           (size_t)n * 2 * sizeof(struct sharp_tcp_tag_set) <= SHARP_TCP_TAGS_BUDGET)
        n *= 2;
    bpf_map__set_max_entries(m, n);
    b->skel->rodata->tag_set_mask = n - 1;
    b->tag_sets = n;
}

static int try_tagged(sharp_kernel_bpf_t *b, bool retransmit_has_err, char *why, size_t whylen)
{
    b->skel = sharp_tcp__open();
    if (!b->skel) {
        snprintf(why, whylen, "opening the eBPF object failed: %s", strerror(errno));
        return -1;
    }
    b->skel->rodata->retransmit_has_err = retransmit_has_err;
    /* SHARP's process, as its connects will show it: its id in its own
     * PID namespace (a container's), and that namespace */
    struct stat pidns;
    if (stat("/proc/self/ns/pid", &pidns) < 0) {
        snprintf(why, whylen, "/proc/self/ns/pid: %s", strerror(errno));
        return -1;
    }
    b->skel->rodata->target_tgid = (uint32_t)getpid();
    b->skel->rodata->target_pidns_dev = (uint64_t)pidns.st_dev;
    b->skel->rodata->target_pidns_ino = (uint64_t)pidns.st_ino;
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(probes); i++) {
        bpf_program__set_autoload(prog_at(b->skel, probes[i].raw), false);
        bpf_program__set_autoload(prog_at(b->skel, probes[i].classic), false);
    }
    bpf_program__set_autoload(b->skel->progs.sharp_btf_tcp_probe, false);
    /* the watched-remotes design's per-socket map: not used here */
    bpf_map__set_autocreate(b->skel->maps.socks, false);
    size_remotes(b);
    size_tags(b, b->skel->maps.tags);
    int rc = sharp_tcp__load(b->skel);
    if (rc < 0) {
        snprintf(why, whylen, "loading the eBPF probes (BTF tracepoints and the TCP iterator) failed: %s%s",
                 strerror(-rc), rc == -EPERM || rc == -EACCES ? " (needs root, or CAP_BPF and CAP_PERFMON)" : "");
        return -1;
    }
    b->probes[0] = '\0';
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(tagged_probes); i++) {
        const tagged_probe_t *p = &tagged_probes[i];
        struct bpf_link **link = (struct bpf_link **)((char *)b->skel + p->link);
        *link = bpf_program__attach(prog_at(b->skel, p->prog));
        if (!*link) {
            snprintf(why, whylen, "attaching the eBPF probe to %s (BTF tracepoint) failed: %s", p->tracepoint,
                     strerror(errno));
            return -1;
        }
        add_probe(b, p->tracepoint);
    }
    b->skel->links.sharp_iter_tcp = bpf_program__attach_iter(b->skel->progs.sharp_iter_tcp, NULL);
    if (!b->skel->links.sharp_iter_tcp) {
        snprintf(why, whylen, "attaching the TCP socket iterator failed: %s", strerror(errno));
        return -1;
    }
    /* one walk now: a kernel that loads the iterator but cannot run it
     * falls back here rather than at the first interval */
    if ((rc = run_iter(b)) < 0) {
        snprintf(why, whylen, "running the TCP socket iterator failed: %s", strerror(-rc));
        return -1;
    }
    add_probe(b, "iter:tcp");
    b->tagged = true;
    /* the table, read in place (/kernel's count of tagged sockets) */
    size_t len = (size_t)b->tag_sets * sizeof(struct sharp_tcp_tag_set);
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, bpf_map__fd(b->skel->maps.tags), 0);
    if (m != MAP_FAILED) {
        b->tags = m;
        b->tags_len = len;
    } else {
        sharp_debug(main, "kernel signals: the tags table cannot be mapped: %s", strerror(errno));
    }
    return 0;
}

/* Opens, loads and attaches one flavour (raw tracepoints or classic ones),
 * with `rtt_event` as the RTT source; with `btf`, tcp:tcp_probe as a
 * BTF-enabled raw tracepoint. 0, or -1 with the reason. */
static int try_flavour(sharp_kernel_bpf_t *b, bool raw, bool btf, const char *rtt_event, bool retransmit_has_err,
                       uint32_t netns_ino, char *why, size_t whylen)
{
    btf = btf && raw && strcmp(rtt_event, "tcp_probe") == 0;
    const char *kind = raw ? "raw tracepoint" : "tracepoint";
    b->skel = sharp_tcp__open();
    if (!b->skel) {
        snprintf(why, whylen, "opening the eBPF object failed: %s", strerror(errno));
        return -1;
    }
    b->skel->rodata->target_netns = netns_ino;
    b->skel->rodata->retransmit_has_err = retransmit_has_err;
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(probes); i++) {
        const probe_t *p = &probes[i];
        bool use = !p->rtt || strcmp(p->rtt_name, rtt_event) == 0;
        bool by_btf = btf && p->rtt;
        bpf_program__set_autoload(prog_at(b->skel, p->raw), use && raw && !by_btf);
        bpf_program__set_autoload(prog_at(b->skel, p->classic), use && !raw);
    }
    bpf_program__set_autoload(b->skel->progs.sharp_btf_tcp_probe, btf);
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(tagged_probes); i++)
        bpf_program__set_autoload(prog_at(b->skel, tagged_probes[i].prog), false);
    bpf_program__set_autoload(b->skel->progs.sharp_iter_tcp, false);
    bpf_map__set_autocreate(b->skel->maps.tags, false);
    size_remotes(b);
    int rc = sharp_tcp__load(b->skel);
    if (rc < 0) {
        snprintf(why, whylen, "loading the eBPF probes (%ss) failed: %s%s", kind, strerror(-rc),
                 rc == -EPERM || rc == -EACCES ? " (needs root, or CAP_BPF and CAP_PERFMON)" : "");
        return -1;
    }
    b->probes[0] = '\0';
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(probes); i++) {
        const probe_t *p = &probes[i];
        if (p->rtt && strcmp(p->rtt_name, rtt_event) != 0) continue;
        bool by_btf = btf && p->rtt;
        struct bpf_link **link = by_btf ? &b->skel->links.sharp_btf_tcp_probe
                                        : (struct bpf_link **)((char *)b->skel + (raw ? p->raw_link : p->classic_link));
        *link = bpf_program__attach(by_btf ? b->skel->progs.sharp_btf_tcp_probe
                                           : prog_at(b->skel, raw ? p->raw : p->classic));
        if (!*link) {
            snprintf(why, whylen, "attaching the eBPF probe to %s (%s) failed: %s%s", p->tracepoint, kind,
                     strerror(errno),
                     !raw && errno == ENOENT ? " (is tracefs mounted on /sys/kernel/tracing?)" : "");
            return -1;
        }
        add_probe(b, p->tracepoint);
    }
    b->raw = raw;
    b->btf = btf;
    return 0;
}

sharp_kernel_bpf_t *sharp_kernel_bpf_open(uint32_t netns_ino, char *why, size_t whylen)
{
    if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
        snprintf(why, whylen, "the kernel has no BTF (/sys/kernel/btf/vmlinux: %s)", strerror(errno));
        return NULL;
    }
    libbpf_set_print(libbpf_log);
    struct btf *vmlinux = btf__load_vmlinux_btf();
    if (!vmlinux) {
        snprintf(why, whylen, "the kernel's BTF cannot be read: %s", strerror(errno));
        return NULL;
    }
    /* tcp:tcp_probe (Linux 4.16) when the kernel has it, else the RTT is
     * sampled where receive buffers are tuned */
    const char *rtt_event = kernel_has_struct(vmlinux, "trace_event_raw_tcp_probe") ? "tcp_probe"
                                                                                      : "tcp_rcv_space_adjust";
    bool retransmit_has_err = raw_tp_nargs(vmlinux, "tcp_retransmit_skb", 3);
    btf__free(vmlinux);
    sharp_kernel_bpf_t *b = sharp_calloc(1, sizeof *b);
    char raw_why[320];
    char btf_why[320];
    int rc = try_tagged(b, retransmit_has_err, btf_why, sizeof btf_why);
    if (rc < 0) {
        sharp_debug(main, "kernel signals: tagged sockets unavailable (%s)", btf_why);
        sharp_tcp__destroy(b->skel);
        b->skel = NULL;
        rc = try_flavour(b, true, true, rtt_event, retransmit_has_err, netns_ino, btf_why, sizeof btf_why);
    }
    if (rc < 0) {
        sharp_debug(main, "kernel signals: tcp_probe as a BTF tracepoint unavailable (%s)", btf_why);
        sharp_tcp__destroy(b->skel);
        b->skel = NULL;
        rc = try_flavour(b, true, false, rtt_event, retransmit_has_err, netns_ino, raw_why, sizeof raw_why);
    }
    if (rc < 0) {
        sharp_tcp__destroy(b->skel);
        b->skel = NULL;
        char why2[320];
        if (try_flavour(b, false, false, rtt_event, retransmit_has_err, netns_ino, why2, sizeof why2) < 0) {
            snprintf(why, whylen, "%s; %s", raw_why, why2);
            goto fail;
        }
        sharp_debug(main, "kernel signals: raw tracepoints unavailable (%s), classic tracepoints attached", raw_why);
    }
    b->remotes_fd = bpf_map__fd(b->skel->maps.remotes);
    b->counters_fd = bpf_map__fd(b->skel->maps.counters);
    b->ports_fd = bpf_map__fd(b->skel->maps.ports);
    b->free_slots = sharp_calloc(b->max_remotes, sizeof *b->free_slots);
    b->freed_ns = sharp_calloc(b->max_remotes, sizeof *b->freed_ns);
    b->port_refs = sharp_calloc(65536, sizeof *b->port_refs);
    b->ncpus = libbpf_num_possible_cpus();
    if (b->ncpus <= 0) {
        snprintf(why, whylen, "the number of possible CPUs is unknown: %s", strerror(-b->ncpus));
        goto fail;
    }
    b->percpu = sharp_calloc((size_t)b->ncpus, sizeof *b->percpu);
    /* about 32 KiB of values per batch, whatever the number of CPUs: a
     * sidecar watching a few hosts should not hold more for them (10,000
     * remotes on 2 CPUs are some 50 batches a read) */
    b->chunk = (uint32_t)SHARP_MAX(1, (32 * 1024) / ((size_t)b->ncpus * sizeof *b->percpu));
    if (b->chunk > 256) b->chunk = 256;
    b->bkeys = sharp_calloc(b->chunk, sizeof *b->bkeys);
    b->bvalues = sharp_calloc((size_t)b->chunk * (size_t)b->ncpus, sizeof *b->bvalues);
    return b;
fail:
    sharp_kernel_bpf_close(b);
    return NULL;
}

void sharp_kernel_bpf_close(sharp_kernel_bpf_t *b)
{
    if (!b) return;
    if (b->tags) munmap((void *)b->tags, b->tags_len);
    sharp_tcp__destroy(b->skel); /* detaches and frees the maps */
    free(b->percpu);
    free(b->free_slots);
    free(b->freed_ns);
    free(b->port_refs);
    free(b->bkeys);
    free(b->bvalues);
    free(b);
}

const char *sharp_kernel_bpf_probes(const sharp_kernel_bpf_t *b)
{
    return b->probes;
}

const char *sharp_kernel_bpf_attach_kind(const sharp_kernel_bpf_t *b)
{
    return b->tagged ? "tp_btf+iter" : b->btf ? "raw_tracepoint+tp_btf" : b->raw ? "raw_tracepoint" : "tracepoint";
}

uint32_t sharp_kernel_bpf_max_remotes(const sharp_kernel_bpf_t *b)
{
    return b->max_remotes;
}

uint32_t sharp_kernel_bpf_tag_slots(const sharp_kernel_bpf_t *b)
{
    return b->tagged ? b->tag_sets * SHARP_TCP_TAG_WAYS : 0;
}

int64_t sharp_kernel_bpf_tagged_sockets(const sharp_kernel_bpf_t *b)
{
    if (!b->tags) return -1;
    int64_t n = 0;
    for (uint32_t i = 0; i < b->tag_sets; i++)
        for (int w = 0; w < SHARP_TCP_TAG_WAYS; w++) {
            uint64_t t = __atomic_load_n(&b->tags[i].tag[w], __ATOMIC_RELAXED);
            n += t && !(t & SHARP_TCP_TAG_CLOSED);
        }
    return n;
}

uint64_t sharp_kernel_bpf_tag_failures(const sharp_kernel_bpf_t *b)
{
    /* the object's .bss, mapped by libbpf: read in place */
    return b->tagged ? __atomic_load_n(&b->skel->bss->tag_failures, __ATOMIC_RELAXED) : 0;
}

int sharp_kernel_bpf_sample(sharp_kernel_bpf_t *b)
{
    return b->tagged ? run_iter(b) : 0;
}

/* Whether a batch operation failed for want of the kernel's support
 * (rather than for one of its keys). */
static bool batch_unsupported(int err)
{
    return err == EINVAL || err == ENOTSUP || err == EOPNOTSUPP || err == ENOSYS;
}

/* A slot for a new remote: the oldest freed one once its quarantine is
 * over, else one never given; UINT32_MAX when there is none (the table
 * full, or its free slots all freed too recently: the remote is tried
 * again at the next reconciliation). */
static uint32_t slot_take(sharp_kernel_bpf_t *b, uint64_t now)
{
    if (b->nfree && now - b->freed_ns[b->free_head] >= SLOT_QUARANTINE_NS) {
        uint32_t s = b->free_slots[b->free_head];
        b->free_head = (b->free_head + 1) % b->max_remotes;
        b->nfree--;
        return s;
    }
    if (b->slots_used < b->max_remotes) return b->slots_used++;
    return UINT32_MAX;
}

static void slot_free(sharp_kernel_bpf_t *b, uint32_t s, uint64_t now)
{
    if (b->nfree == b->max_remotes) return; /* cannot happen: each slot is freed once */
    uint32_t i = (b->free_head + b->nfree++) % b->max_remotes;
    b->free_slots[i] = s;
    b->freed_ns[i] = now;
}

/* Writes n slots of `counters` at once (one batch call where the kernel
 * has them, else one call each): each CPU's copy of slots[i] gets
 * remotes[i] (NULL: all zeros, the slot free) and zeroed counters. A
 * slot written is ok[i]. */
static void write_slots(sharp_kernel_bpf_t *b, const uint32_t *slots, const struct sharp_tcp_remote *remotes,
                        size_t n, bool *ok)
{
    if (!n) return;
    size_t ncpus = (size_t)b->ncpus;
    struct sharp_tcp_slot *v = sharp_calloc(n * ncpus, sizeof *v);
    for (size_t i = 0; remotes && i < n; i++)
        for (size_t c = 0; c < ncpus; c++) v[i * ncpus + c].remote = remotes[i];
    size_t done = 0;
    if (!b->no_batch_update && n > 1) {
        LIBBPF_OPTS(bpf_map_batch_opts, opts);
        uint32_t count = (uint32_t)n;
        int rc = bpf_map_update_batch(b->counters_fd, slots, v, &count, &opts);
        int err = errno;
        if (rc == 0) done = n;
        else if (batch_unsupported(err)) b->no_batch_update = true;
        else done = count < n ? count : 0;
    }
    for (size_t i = 0; i < done; i++) ok[i] = true;
    for (size_t i = done; i < n; i++)
        ok[i] = bpf_map_update_elem(b->counters_fd, &slots[i], &v[i * ncpus], BPF_ANY) == 0;
    free(v);
}

/* The port's bit follows whether a watched remote has it (the map is
 * written whole: it changes only as hosts come and go). A new remote's
 * slot is written (its remote named, its counters zeroed) before the
 * remote goes into `remotes`, where the probes find it. */
size_t sharp_kernel_bpf_watch_many(sharp_kernel_bpf_t *b, const struct sharp_tcp_remote *keys, size_t n, bool *ok,
                                   uint32_t *slots)
{
    if (!n) return 0;
    memset(ok, 0, n * sizeof *ok);
    uint64_t now = sharp_now_ns();
    /* the slots: those given, in order, then the keys that got none */
    uint32_t *sl = sharp_calloc(n, sizeof *sl);
    size_t *pos = sharp_calloc(n, sizeof *pos);
    struct sharp_tcp_remote *rk = sharp_calloc(n, sizeof *rk);
    bool *wok = sharp_calloc(n, sizeof *wok);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        slots[i] = UINT32_MAX;
        uint32_t s = slot_take(b, now);
        if (s == UINT32_MAX) continue;
        sl[m] = s, pos[m] = i, rk[m++] = keys[i];
    }
    write_slots(b, sl, rk, m, wok);
    /* the slots not written go back (their contents unknown: freed now) */
    size_t k = 0;
    for (size_t j = 0; j < m; j++) {
        if (!wok[j]) {
            slot_free(b, sl[j], now);
            continue;
        }
        sl[k] = sl[j], pos[k] = pos[j], rk[k++] = rk[j];
    }
    m = k;
    size_t done = 0;
    if (!b->no_batch_update && m > 1) {
        /* one call for the entries (a batch takes no BPF_NOEXIST: the keys
         * are ones not watched) */
        LIBBPF_OPTS(bpf_map_batch_opts, opts);
        uint32_t count = (uint32_t)m;
        int rc = bpf_map_update_batch(b->remotes_fd, rk, sl, &count, &opts);
        int err = errno;
        /* the count is the kernel's only once it started on the keys: a
         * refusal of the call itself leaves it as it was */
        if (rc == 0) done = m;
        else if (batch_unsupported(err)) b->no_batch_update = true;
        else done = count < m ? count : 0; /* those before the one that failed */
        for (size_t j = 0; j < done; j++) ok[pos[j]] = true, slots[pos[j]] = sl[j];
    }
    /* the rest one by one: a kernel without batches, or past a key the
     * batch stopped at (already there: watched, with its slot; the table
     * full: not) */
    size_t nunused = 0;
    for (size_t j = done; j < m; j++) {
        size_t i = pos[j];
        if (bpf_map_update_elem(b->remotes_fd, &rk[j], &sl[j], BPF_NOEXIST) == 0) {
            ok[i] = true, slots[i] = sl[j];
            continue;
        }
        uint32_t had;
        if (errno == EEXIST && bpf_map_lookup_elem(b->remotes_fd, &rk[j], &had) == 0) ok[i] = true, slots[i] = had;
        sl[nunused++] = sl[j]; /* written, not used: cleared and freed below */
    }
    if (nunused) {
        write_slots(b, sl, NULL, nunused, wok);
        for (size_t j = 0; j < nunused; j++) slot_free(b, sl[j], now);
    }
    free(sl);
    free(pos);
    free(rk);
    free(wok);
    /* the new ports' bits, in one update of the ports map */
    bool changed = false;
    size_t nok = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ok[i]) continue;
        nok++;
        uint16_t port = keys[i].port;
        if (b->port_refs[port]++ == 0) {
            b->ports.bits[port >> 6] |= 1ull << (port & 63);
            changed = true;
        }
    }
    uint32_t zero = 0;
    if (changed && bpf_map_update_elem(b->ports_fd, &zero, &b->ports, BPF_ANY) < 0) {
        /* not watched after all: entries and references undone */
        size_t nundo = 0;
        for (size_t i = 0; i < n; i++)
            if (ok[i]) {
                uint16_t port = keys[i].port;
                if (--b->port_refs[port] == 0) b->ports.bits[port >> 6] &= ~(1ull << (port & 63));
                nundo++;
            }
        struct sharp_tcp_remote *uk = sharp_calloc(nundo, sizeof *uk);
        uint32_t *us = sharp_calloc(nundo, sizeof *us);
        for (size_t i = 0, j = 0; i < n; i++)
            if (ok[i]) uk[j] = keys[i], us[j++] = slots[i], ok[i] = false;
        for (size_t j = 0; j < nundo; j++) bpf_map_delete_elem(b->remotes_fd, &uk[j]);
        bool *dok = sharp_calloc(nundo, sizeof *dok);
        write_slots(b, us, NULL, nundo, dok);
        for (size_t j = 0; j < nundo; j++) slot_free(b, us[j], now);
        free(dok);
        free(uk);
        free(us);
        return 0;
    }
    return nok;
}

/* Out of `remotes` first (no new tag takes the slots), then the slots
 * cleared (a tagged socket's event no longer finds its remote there) and
 * freed, given again only after SLOT_QUARANTINE_NS. */
void sharp_kernel_bpf_unwatch_many(sharp_kernel_bpf_t *b, const struct sharp_tcp_remote *keys, const uint32_t *slots,
                                   size_t n)
{
    if (!n) return;
    size_t done = 0;
    if (!b->no_batch_update && n > 1) {
        LIBBPF_OPTS(bpf_map_batch_opts, opts);
        uint32_t count = (uint32_t)n;
        int rc = bpf_map_delete_batch(b->remotes_fd, keys, &count, &opts);
        if (rc == 0) done = n;
        else if (batch_unsupported(errno)) b->no_batch_update = true;
        else done = count < n ? count : 0;
    }
    for (size_t i = done; i < n; i++) bpf_map_delete_elem(b->remotes_fd, &keys[i]);
    bool *ok = sharp_calloc(n, sizeof *ok);
    write_slots(b, slots, NULL, n, ok);
    uint64_t now = sharp_now_ns();
    for (size_t i = 0; i < n; i++) slot_free(b, slots[i], now);
    free(ok);
    bool changed = false;
    for (size_t i = 0; i < n; i++) {
        uint16_t port = keys[i].port;
        if (b->port_refs[port] && --b->port_refs[port] == 0) {
            b->ports.bits[port >> 6] &= ~(1ull << (port & 63));
            changed = true;
        }
    }
    uint32_t zero = 0;
    if (changed) bpf_map_update_elem(b->ports_fd, &zero, &b->ports, BPF_ANY);
}

static void sum_cpus(const struct sharp_tcp_slot *percpu, int ncpus, sharp_tcp_counters_t *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < ncpus; i++) {
        const sharp_tcp_counters_t *v = &percpu[i].c;
        out->segs_out += v->segs_out;
        out->retrans += v->retrans;
        out->syn_retrans += v->syn_retrans;
        out->rtt_sum_us += v->rtt_sum_us;
        out->rttvar_sum_us += v->rttvar_sum_us;
        out->rtt_samples += v->rtt_samples;
        out->connects += v->connects;
        out->connect_lat_sum_us += v->connect_lat_sum_us;
        out->connect_fail += v->connect_fail;
        out->rst_rx += v->rst_rx;
        out->rst_tx += v->rst_tx;
        out->closes += v->closes;
    }
}

int sharp_kernel_bpf_read(sharp_kernel_bpf_t *b, uint32_t slot, const struct sharp_tcp_remote *key,
                          sharp_tcp_counters_t *out)
{
    if (bpf_map_lookup_elem(b->counters_fd, &slot, b->percpu) < 0) return -errno;
    if (memcmp(&b->percpu[0].remote, key, sizeof *key) != 0) return -ENOENT;
    sum_cpus(b->percpu, b->ncpus, out);
    return 0;
}

int sharp_kernel_bpf_read_all(sharp_kernel_bpf_t *b,
                              void (*fn)(void *arg, uint32_t slot, const struct sharp_tcp_remote *key,
                                         const sharp_tcp_counters_t *c),
                              void *arg)
{
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    uint32_t token = 0; /* an array's batch position: the last index read */
    /* the slots ever given, in chunks: the array's other slots are unused */
    for (uint32_t at = 0; at < b->slots_used;) {
        uint32_t n = b->slots_used - at < b->chunk ? b->slots_used - at : b->chunk;
        int rc = bpf_map_lookup_batch(b->counters_fd, at ? &token : NULL, &token, b->bkeys, b->bvalues, &n, &opts);
        int err = rc < 0 ? errno : 0;
        if (rc < 0 && err != ENOENT) return -err;
        for (uint32_t i = 0; i < n; i++) {
            const struct sharp_tcp_slot *v = &b->bvalues[(size_t)i * (size_t)b->ncpus];
            if (!v->remote.family) continue; /* free */
            sharp_tcp_counters_t sum;
            sum_cpus(v, b->ncpus, &sum);
            fn(arg, b->bkeys[i], &v->remote, &sum);
        }
        if (err == ENOENT || !n) return 0; /* the array's end */
        at += n;
    }
    return 0;
}

#else /* !SHARP_HAVE_BPF */

struct sharp_kernel_bpf {
    int unused;
};

sharp_kernel_bpf_t *sharp_kernel_bpf_open(uint32_t netns_ino, char *why, size_t whylen)
{
    (void)netns_ino;
    snprintf(why, whylen, "SHARP was built without its eBPF probes (clang, bpftool, libbpf or the build "
                          "machine's BTF were missing)");
    return NULL;
}

void sharp_kernel_bpf_close(sharp_kernel_bpf_t *b)
{
    free(b);
}

const char *sharp_kernel_bpf_probes(const sharp_kernel_bpf_t *b)
{
    (void)b;
    return "";
}

const char *sharp_kernel_bpf_attach_kind(const sharp_kernel_bpf_t *b)
{
    (void)b;
    return "";
}

uint32_t sharp_kernel_bpf_max_remotes(const sharp_kernel_bpf_t *b)
{
    (void)b;
    return 0;
}

uint32_t sharp_kernel_bpf_tag_slots(const sharp_kernel_bpf_t *b)
{
    (void)b;
    return 0;
}

int64_t sharp_kernel_bpf_tagged_sockets(const sharp_kernel_bpf_t *b)
{
    (void)b;
    return -1;
}

uint64_t sharp_kernel_bpf_tag_failures(const sharp_kernel_bpf_t *b)
{
    (void)b;
    return 0;
}

int sharp_kernel_bpf_sample(sharp_kernel_bpf_t *b)
{
    (void)b;
    return -ENOSYS;
}

size_t sharp_kernel_bpf_watch_many(sharp_kernel_bpf_t *b, const struct sharp_tcp_remote *keys, size_t n, bool *ok,
                                   uint32_t *slots)
{
    (void)b, (void)keys, (void)slots;
    memset(ok, 0, n * sizeof *ok);
    return 0;
}

void sharp_kernel_bpf_unwatch_many(sharp_kernel_bpf_t *b, const struct sharp_tcp_remote *keys, const uint32_t *slots,
                                   size_t n)
{
    (void)b, (void)keys, (void)slots, (void)n;
}

int sharp_kernel_bpf_read(sharp_kernel_bpf_t *b, uint32_t slot, const struct sharp_tcp_remote *key,
                          sharp_tcp_counters_t *out)
{
    (void)b, (void)slot, (void)key, (void)out;
    return -ENOSYS;
}

int sharp_kernel_bpf_read_all(sharp_kernel_bpf_t *b,
                              void (*fn)(void *arg, uint32_t slot, const struct sharp_tcp_remote *key,
                                         const sharp_tcp_counters_t *c),
                              void *arg)
{
    (void)b, (void)fn, (void)arg;
    return -ENOSYS;
}

#endif
