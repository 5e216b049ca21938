/* filter.h: envoy.filters.http.header_mutation. */
#ifndef SHARP_FILTERS_HEADER_MUTATION_H
#define SHARP_FILTERS_HEADER_MUTATION_H

#include "http/filter.h"
#include "http/route.h"

extern const sharp_filter_factory_t sharp_header_mutation_filter;

/* One envoy.config.common.mutation_rules.v3.HeaderMutation: remove a
 * header (op.name, no value) or append one (a HeaderValueOption). */
typedef struct sharp_hm_mutation {
    bool remove;
    sharp_header_op_t op; /* remove: only op.name */
} sharp_hm_mutation_t;

/* A list of mutations, applied one after the other in order (Envoy's
 * Http::HeaderMutations, unlike the batched route header operations). */
typedef struct sharp_hm_list {
    sharp_hm_mutation_t *m;
    uint32_t n;
} sharp_hm_list_t;

struct Envoy__Config__Common__MutationRules__V3__HeaderMutation;
/* Builds a list from `n` protos; errors name "path[i].field". */
int sharp_hm_list_init(sharp_hm_list_t *l, const char *path,
                       struct Envoy__Config__Common__MutationRules__V3__HeaderMutation *const *pb,
                       size_t n, char *err, size_t errlen);
void sharp_hm_list_free(sharp_hm_list_t *l);
/* Applies the list to `h`; values are rendered for `si` (may be NULL). */
void sharp_hm_list_apply(const sharp_hm_list_t *l, sharp_headers_t *h,
                         const sharp_stream_info_t *si);

#endif
