/* registry.c: the HTTP filters built into SHARP. */
#include "filters/adaptive_concurrency/filter.h"
#include "filters/bandwidth_limit/filter.h"
#include "filters/admission_control/filter.h"
#include "filters/cache/filter.h"
#include "filters/compressor/filter.h"
#include "filters/cors/filter.h"
#include "filters/csrf/filter.h"
#include "filters/stateful_session/filter.h"
#include "filters/decompressor/filter.h"
#include "filters/dynamic_forward_proxy/filter.h"
#include "filters/ext_authz/filter.h"
#include "filters/fault/filter.h"
#include "filters/grpc_bridge/bridge.h"
#include "filters/header_mutation/filter.h"
#include "filters/header_to_metadata/filter.h"
#include "filters/health_check/filter.h"
#include "filters/local_ratelimit/filter.h"
#include "filters/ratelimit/filter.h"
#include "filters/rbac/filter.h"
#include "filters/matching/filter.h"
#include "filters/router/router.h"
#include "http/filter.h"

void sharp_filters_register_builtin(void)
{
    sharp_filter_register(&sharp_router_filter);
    sharp_filter_register(&sharp_adaptive_concurrency_filter);
    sharp_filter_register(&sharp_aimd_concurrency_filter);
    sharp_filter_register(&sharp_admission_control_filter);
    sharp_filter_register(&sharp_health_check_filter);
    sharp_filter_register(&sharp_compressor_filter);
    sharp_filter_register(&sharp_local_ratelimit_filter);
    sharp_filter_register(&sharp_ext_authz_filter);
    sharp_filter_register(&sharp_ratelimit_filter);
    sharp_filter_register(&sharp_header_to_metadata_filter);
    sharp_filter_register(&sharp_fault_filter);
    sharp_filter_register(&sharp_bandwidth_limit_filter);
    sharp_filter_register(&sharp_rbac_filter);
    sharp_filter_register(&sharp_cors_filter);
    sharp_filter_register(&sharp_csrf_filter);
    sharp_filter_register(&sharp_stateful_session_filter);
    sharp_filter_register(&sharp_header_mutation_filter);
    sharp_filter_register(&sharp_grpc_http1_bridge_filter);
    sharp_filter_register(&sharp_grpc_http1_reverse_bridge_filter);
    sharp_filter_register(&sharp_decompressor_filter);
    sharp_filter_register(&sharp_cache_filter);
    sharp_filter_register(&sharp_dynamic_forward_proxy_filter);
    sharp_filter_register(&sharp_match_delegate_filter);
    sharp_filter_register(&sharp_composite_filter);
}
