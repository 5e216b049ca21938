/* scaling_main.h: sharp-train's scaling commands (scaling_main.c). argv[0]
 * is the command's name; the return value is the exit status. */
#ifndef SHARP_AGENT_SCALING_MAIN_H
#define SHARP_AGENT_SCALING_MAIN_H

int sharp_scaling_train_main(int argc, char **argv);
int sharp_scaling_eval_main(int argc, char **argv);

#endif
