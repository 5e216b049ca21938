/* subset.h: Envoy's subset load balancer (Cluster.lb_subset_config). Hosts
 * carry their "envoy.lb" endpoint metadata; each subset selector (a set of
 * keys) puts every host that has a value for all its keys into the subset of
 * its key-value pairs; a request's match criteria (the route's
 * metadata_match, the weighted cluster's over it, the stream's "envoy.lb"
 * dynamic metadata over both) pick the subset with exactly those pairs, or
 * the fallback policy decides.
 *
 * Metadata, criteria and subsets all use one canonical byte form, so that
 * matching is a hash and a memcmp: the fields sorted by key (bytewise, as
 * std::string orders them), each as [u32 key length][key][u32 value
 * length][value], a value as a type tag and its contents (a Struct's
 * fields sorted too), so that two values are equal exactly when protobuf's
 * MessageDifferencer (Envoy's HashedValue) calls them equal: a string "1"
 * is not the number 1, and 1 and 1.0 are the same number.
 *
 * The membership of the subsets (sharp_subset_plan_t) is computed on the
 * main thread once per host set and shared by the workers with the set;
 * each worker builds one balancer of the cluster's policy per subset
 * (sharp_subset_lbs_t) when it takes the set, so a choice allocates
 * nothing. */
#ifndef SHARP_UPSTREAM_SUBSET_H
#define SHARP_UPSTREAM_SUBSET_H

#include "common.h"
#include "sbuf.h"
#include "upstream/host.h"
#include "upstream/lb.h"

struct Google__Protobuf__Struct;
struct sharp_md_value;

/* An "envoy.lb" struct (or match criteria) in canonical form. */
typedef struct sharp_lbmeta {
    uint32_t len;
    uint8_t b[];
} sharp_lbmeta_t;

/* The canonical form of a google.protobuf.Struct's fields (a key given
 * twice keeps its last value); NULL for an empty struct. */
sharp_lbmeta_t *sharp_lbmeta_from_struct(const struct Google__Protobuf__Struct *st);
sharp_lbmeta_t *sharp_lbmeta_dup(const sharp_lbmeta_t *m);
bool sharp_lbmeta_equal(const sharp_lbmeta_t *a, const sharp_lbmeta_t *b);
/* Envoy's mergeMatchCriteria: the fields of `over` replace or join those of
 * `base`. Either may be NULL (the other is copied). */
sharp_lbmeta_t *sharp_lbmeta_merge(const sharp_lbmeta_t *base, const sharp_lbmeta_t *over);
/* The same at request time, into `out` (reset first): base's fields, with
 * the fields of the STRUCT `dyn` (the stream's "envoy.lb" dynamic metadata)
 * over them. */
void sharp_lbmeta_merge_dynamic(const sharp_lbmeta_t *base, const struct sharp_md_value *dyn,
                                sharp_sbuf_t *out);

typedef enum {
    SHARP_SUBSET_NO_FALLBACK = 0,
    SHARP_SUBSET_ANY_ENDPOINT = 1,
    SHARP_SUBSET_DEFAULT_SUBSET = 2,
} sharp_subset_fallback_t;

/* LbSubsetSelector.fallback_policy (Envoy's numbers) */
typedef enum {
    SHARP_SELECTOR_NOT_DEFINED = 0,
    SHARP_SELECTOR_NO_FALLBACK = 1,
    SHARP_SELECTOR_ANY_ENDPOINT = 2,
    SHARP_SELECTOR_DEFAULT_SUBSET = 3,
    SHARP_SELECTOR_KEYS_SUBSET = 4,
} sharp_selector_fallback_t;

typedef struct {
    char **keys; /* sorted, without duplicates */
    uint32_t nkeys;
    sharp_selector_fallback_t fallback;
    char **fallback_keys; /* KEYS_SUBSET: sorted, a strict subset of keys */
    uint32_t nfallback_keys;
    size_t *key_lens, *fallback_key_lens; /* their lengths (sharp_subset_config_finish) */
    bool single_host; /* single_host_per_subset */
} sharp_subset_selector_t;

/* Envoy's selector map: a trie of the selectors' sorted keys whose node at
 * the end of a selector's keys holds its fallback policy when that
 * selector made the node (a node another selector made first, as a prefix
 * of its own keys, keeps NOT_DEFINED, as in Envoy). Flattened: one node
 * per distinct key prefix, its keys those of selector `sel` up to depth. */
typedef struct {
    uint32_t sel, depth;
    sharp_selector_fallback_t fallback;
    uint32_t params; /* the selector whose fallback applies, when fallback is set */
} sharp_subset_fbnode_t;

/* lb_subset_config (only with at least one selector: Envoy turns subset
 * load balancing on only then). */
typedef struct sharp_subset_config {
    sharp_subset_fallback_t fallback;
    sharp_lbmeta_t *default_subset; /* NULL: every host */
    sharp_subset_selector_t *selectors;
    uint32_t nselectors;
    bool panic_mode_any;
    bool list_as_any;            /* a list value puts a host in a subset per element */
    bool metadata_fallback_list; /* metadata_fallback_policy FALLBACK_LIST */
    bool any_selector_default;   /* a selector falls back to the default subset */
    sharp_subset_fbnode_t *nodes;
    uint32_t nnodes;
    /* the nodes with a fallback policy (not NOT_DEFINED), the only ones a
     * request's fallback can be decided by (sharp_subset_config_finish) */
    uint32_t *fb_nodes;
    uint32_t nfb_nodes;
} sharp_subset_config_t;

/* list_as_any: the most subsets one host may be in for one selector (the
 * product of its list values' lengths); the loader refuses an endpoint
 * over it, which bounds the memory hostile metadata could take. */
#define SHARP_SUBSET_MAX_COMBINATIONS 1024
/* The most subsets the metadata puts a host in for one selector (0: none,
 * 1 without list_as_any). */
uint64_t sharp_subset_host_combinations(const sharp_subset_config_t *cfg,
                                        const sharp_lbmeta_t *meta);

/* Builds the selector map from the selectors (after they are all set). */
void sharp_subset_config_finish(sharp_subset_config_t *cfg);
void sharp_subset_config_free(sharp_subset_config_t *cfg);

typedef struct {
    uint8_t *key; /* the subset's key-value pairs, canonical */
    uint32_t keylen;
    uint64_t hash;
    sharp_host_t **hosts; /* in the host set's order */
    uint32_t nhosts;
    /* single_host_per_subset (the selector that made it): hosts[0] only,
     * the first host of the lowest priority, chosen whatever its health */
    bool single;
} sharp_subset_entry_t;

/* The subsets of one host set: never empty ones. */
typedef struct sharp_subset_plan {
    sharp_subset_entry_t *entries;
    uint32_t n;
    uint32_t *table; /* open addressing: entry index + 1, 0 empty */
    uint32_t cap;
    bool has_default;           /* a DEFAULT_SUBSET fallback: hosts matching default_subset */
    uint32_t single_duplicates; /* hosts a single-host subset left out */
    sharp_host_t **dflt;
    uint32_t ndflt;
} sharp_subset_plan_t;

/* Host metadata is read here only (main thread). */
sharp_subset_plan_t *sharp_subset_plan_build(const sharp_subset_config_t *cfg,
                                             sharp_host_t *const *hosts, uint32_t n);
void sharp_subset_plan_free(sharp_subset_plan_t *p);
/* The entry whose pairs are exactly crit[0..len), or -1. */
int32_t sharp_subset_plan_find(const sharp_subset_plan_t *p, const uint8_t *crit, size_t len);
/* Subsets of `now` that `before` lacks (created) and the reverse (removed). */
void sharp_subset_plan_diff(const sharp_subset_plan_t *before, const sharp_subset_plan_t *now,
                            uint32_t *created, uint32_t *removed);

/* A worker's balancers over a plan: one per subset and one for the default
 * subset, configured like `tmpl` (the cluster's balancer over all hosts,
 * which the ANY_ENDPOINT fallback uses). */
typedef struct sharp_subset_lbs {
    const sharp_subset_plan_t *plan; /* NULL: the cluster has no subsets */
    const sharp_subset_config_t *cfg;
    sharp_lb_t *lbs;
    sharp_lb_t dflt;
} sharp_subset_lbs_t;

void sharp_subset_lbs_init(sharp_subset_lbs_t *s, const sharp_subset_config_t *cfg,
                           const sharp_subset_plan_t *plan, const sharp_lb_t *tmpl);
void sharp_subset_lbs_destroy(sharp_subset_lbs_t *s);
/* Re-applies tmpl's zone-aware settings to every subset balancer. */
void sharp_subset_lbs_rezone(sharp_subset_lbs_t *s, const sharp_lb_t *tmpl);
/* Envoy's SubsetLoadBalancer::chooseHost: the subset of the criteria
 * (has_crit false: the request has none) when it exists, else the fallback
 * policy of the selector with exactly the criteria's keys when it has one,
 * else the cluster's over `any` (all hosts) or the default subset, then
 * with panic_mode_any all hosts. Counts lb_subsets_selected / _fallback /
 * _fallback_panic in any's stats. */
sharp_host_t *sharp_subset_choose(sharp_subset_lbs_t *s, sharp_lb_t *any, bool has_crit,
                                  const uint8_t *crit, size_t len);

#endif
