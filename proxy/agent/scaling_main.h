/* scaling_main.h: sharp-train's scaling commands (scaling_main.c). argv[0]
 * is the command's name; the return value is the exit status. */
#ifndef SHARP_AGENT_SCALING_MAIN_H
#define SHARP_AGENT_SCALING_MAIN_H

#include <stdint.h>

int sharp_scaling_train_main(int argc, char **argv);
int sharp_scaling_eval_main(int argc, char **argv);

/* What every sharp-train command parses with: a decimal number in
 * [0, max] (0, or -1 for anything else: a sign, trailing text, overflow),
 * and the monotonic clock in seconds for its progress lines. */
int sharp_train_parse_u64(const char *s, uint64_t max, uint64_t *out);
double sharp_train_now(void);

#endif
