/* main.c: command line (Envoy's flags) and process entry. */
#include "common.h"
#include "log.h"
#include "server.h"
#include "heap.h"
#include "kernel/kernel.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <unistd.h>


static void usage(FILE *f)
{
    fputs("Usage: sharp [options]\n"
          "  -c, --config-path PATH          Envoy v3 bootstrap (YAML or JSON)\n"
          "      --config-yaml YAML          inline bootstrap YAML\n"
          "      --mode serve|validate       validate checks the config and exits 0 or 1\n"
          "      --concurrency N             worker threads (default: number of cores)\n"
          "  -l, --log-level LEVEL           trace|debug|info|warning|error|critical|off (all loggers)\n"
          "      --component-log-level L     per-logger levels: upstream:debug,connection:trace\n"
          "      --log-format FORMAT         log line layout (Envoy's flags; default\n"
          "                                  \"" SHARP_DEFAULT_LOG_FORMAT "\")\n"
          "      --log-path PATH             write logs to PATH instead of stderr (reopened on SIGUSR1)\n"
          "      --service-cluster NAME      node.cluster when the bootstrap has none\n"
          "      --service-node NAME         node.id when the bootstrap has none\n"
          "      --drain-time-s N            graceful drain bound on SIGTERM (default 600)\n"
          "      --parent-shutdown-time-s N  accepted for compatibility (default 900)\n"
          "      --restart-epoch N           hot restart epoch: only 0 (hot restart is not supported)\n"
          "      --base-id N                 accepted for compatibility (no shared memory is used)\n"
          "      --disable-hot-restart       accepted for compatibility\n"
          "      --kernel-signals MODE       SHARP: per-host kernel TCP signals from auto (eBPF probes,\n"
          "                                  else TCP_INFO; the default), tcp_info (TCP_INFO only) or off\n"
          "      --main-thread-nice N        SHARP: the main thread (xDS, health checks, admin, stats)\n"
          "                                  runs N nice levels below the workers once they start, so\n"
          "                                  its bursts yield the CPU to the data path (0-19; default 0)\n"
          "      --version                   print the version and exit\n"
          "  -h, --help                      this text\n"
          "With both -c and --config-yaml, the YAML is merged over the file (proto MergeFrom).\n"
          "Without -c or --config-yaml, SHARP runs its embedded default bootstrap:\n"
          "listener 0.0.0.0:10000 -> cluster local_service (127.0.0.1:8080), admin 127.0.0.1:9901.\n",
          f);
}

static int parse_uint(const char *s, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v > 1000000) return -1;
    *out = (unsigned)v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_CONFIG_YAML = 256, O_MODE, O_CONCURRENCY, O_LOG_PATH, O_SERVICE_CLUSTER,
           O_SERVICE_NODE, O_DRAIN_TIME, O_PARENT_SHUTDOWN, O_VERSION, O_IGNORED,
           O_COMPONENT_LOG_LEVEL, O_LOG_FORMAT, O_RESTART_EPOCH, O_BASE_ID, O_KERNEL_SIGNALS, O_MAIN_THREAD_NICE };
    static const struct option longopts[] = {
        {"config-path", required_argument, NULL, 'c'},
        {"config-yaml", required_argument, NULL, O_CONFIG_YAML},
        {"mode", required_argument, NULL, O_MODE},
        {"concurrency", required_argument, NULL, O_CONCURRENCY},
        {"log-level", required_argument, NULL, 'l'},
        {"log-path", required_argument, NULL, O_LOG_PATH},
        {"service-cluster", required_argument, NULL, O_SERVICE_CLUSTER},
        {"service-node", required_argument, NULL, O_SERVICE_NODE},
        {"drain-time-s", required_argument, NULL, O_DRAIN_TIME},
        {"parent-shutdown-time-s", required_argument, NULL, O_PARENT_SHUTDOWN},
        {"version", no_argument, NULL, O_VERSION},
        {"help", no_argument, NULL, 'h'},
        {"component-log-level", required_argument, NULL, O_COMPONENT_LOG_LEVEL},
        {"log-format", required_argument, NULL, O_LOG_FORMAT},
        {"restart-epoch", required_argument, NULL, O_RESTART_EPOCH},
        {"base-id", required_argument, NULL, O_BASE_ID},
        {"disable-hot-restart", no_argument, NULL, O_IGNORED},
        {"kernel-signals", required_argument, NULL, O_KERNEL_SIGNALS},
        {"main-thread-nice", required_argument, NULL, O_MAIN_THREAD_NICE},
        {NULL, 0, NULL, 0},
    };
    sharp_options_t o = {0};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    o.concurrency = cores > 0 ? (unsigned)cores : 1;
    o.log_level = SHARP_LOG_INFO;
    o.drain_time_s = 600;
    o.parent_shutdown_time_s = 900;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:l:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': o.config_path = optarg; break;
        case O_CONFIG_YAML: o.config_yaml = optarg; break;
        case O_MODE:
            if (strcmp(optarg, "validate") == 0) o.validate_only = true;
            else if (strcmp(optarg, "serve") != 0) {
                fprintf(stderr, "sharp: --mode must be serve or validate, got '%s'\n", optarg);
                return 1;
            }
            break;
        case O_CONCURRENCY:
            if (parse_uint(optarg, &o.concurrency) < 0 || o.concurrency == 0 || o.concurrency > 256) {
                fprintf(stderr, "sharp: --concurrency must be an integer in [1, 256], got '%s'\n", optarg);
                return 1;
            }
            break;
        case 'l':
            o.log_level = sharp_log_level_parse(optarg);
            if (o.log_level < 0) {
                fprintf(stderr, "error: invalid log level specified '%s'\n", optarg);
                return 1;
            }
            break;
        case O_COMPONENT_LOG_LEVEL: {
            char err[512];
            if (sharp_log_component_levels(optarg, false, err, sizeof err) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
            o.component_log_level = optarg;
            break;
        }
        case O_LOG_FORMAT: o.log_format = optarg; break;
        case O_RESTART_EPOCH:
            if (parse_uint(optarg, &o.restart_epoch) < 0) {
                fprintf(stderr, "error: --restart-epoch must be a non-negative integer, got '%s'\n", optarg);
                return 1;
            }
            if (o.restart_epoch != 0) {
                fprintf(stderr,
                        "error: --restart-epoch %u: hot restart is not supported by sharp; start a "
                        "new process with --restart-epoch 0 (or without the flag) and drain the old "
                        "one with SIGTERM\n",
                        o.restart_epoch);
                return 1;
            }
            break;
        case O_BASE_ID:
            if (parse_uint(optarg, &o.base_id) < 0) {
                fprintf(stderr, "error: --base-id must be a non-negative integer, got '%s'\n", optarg);
                return 1;
            }
            break;
        case O_LOG_PATH: o.log_path = optarg; break;
        case O_SERVICE_CLUSTER: o.service_cluster = optarg; break;
        case O_SERVICE_NODE: o.service_node = optarg; break;
        case O_DRAIN_TIME:
            if (parse_uint(optarg, &o.drain_time_s) < 0) {
                fprintf(stderr, "sharp: --drain-time-s must be a non-negative integer\n");
                return 1;
            }
            break;
        case O_PARENT_SHUTDOWN:
            if (parse_uint(optarg, &o.parent_shutdown_time_s) < 0) {
                fprintf(stderr, "sharp: --parent-shutdown-time-s must be a non-negative integer\n");
                return 1;
            }
            break;
        case O_KERNEL_SIGNALS: {
            sharp_kernel_mode_t m;
            if (sharp_kernel_mode_parse(optarg, &m) < 0) {
                fprintf(stderr, "sharp: --kernel-signals must be auto, tcp_info or off, got '%s'\n", optarg);
                return 1;
            }
            o.kernel_signals = (int)m;
            break;
        }
        case O_MAIN_THREAD_NICE:
            if (parse_uint(optarg, &o.main_thread_nice) < 0 || o.main_thread_nice > 19) {
                fprintf(stderr, "sharp: --main-thread-nice must be an integer in [0, 19], got '%s'\n", optarg);
                return 1;
            }
            break;
        case O_VERSION: printf("sharp/%s\n", SHARP_VERSION); return 0;
        case O_IGNORED: break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sharp: unexpected argument '%s'\n", argv[optind]);
        return 1;
    }
    /* -l sets every logger, then --component-log-level the named ones,
     * whatever their order on the command line (as Envoy). */
    sharp_log_set_all((sharp_log_level_t)o.log_level);
    char err[512];
    sharp_log_component_levels(o.component_log_level, true, err, sizeof err);
#ifdef SHARP_HEAP_MIMALLOC
    /* the heap figures and release from the allocator malloc really is */
    sharp_heap_mimalloc_install();
#endif
    if (o.log_format) {
        sharp_log_pattern_t *p = sharp_log_pattern_compile(o.log_format, err, sizeof err);
        if (!p) {
            fprintf(stderr, "error: %s\n", err);
            return 1;
        }
        sharp_log_set_pattern(p);
    }
    /* --mode validate creates no file: logs stay on stderr. */
    if (o.log_path && !o.validate_only && sharp_log_open(o.log_path) < 0) {
        fprintf(stderr, "Failed to open log-file '%s': %s\n", o.log_path, strerror(errno));
        return 1;
    }
    sharp_server_t srv;
    if (sharp_server_init(&srv, &o) < 0) {
        sharp_server_free(&srv);
        return 1;
    }
    int rc = 0;
    if (!o.validate_only) rc = sharp_server_run(&srv);
    sharp_server_free(&srv);
    return rc;
}
