/* A small option scanner shared by the subcommands: "--name VALUE" or "--name=VALUE". */
#ifndef BACKPROP_CLI_ARGS_H
#define BACKPROP_CLI_ARGS_H

/* If argv[*i] is option `name`, stores its value (taking the next argument when not given
 * with '='), advances *i past it and returns 1; returns -1 when the value is missing,
 * 0 when argv[*i] is another argument. */
int bp_arg_value(int argc, char **argv, int *i, const char *name, const char **value);

/* Parses a finite positive number; 0 on success. */
int bp_arg_positive(const char *s, double *out);

/* Parses a decimal integer in [lo, hi], the whole string and nothing else ("1e3", "2x",
 * "3.7" and values past the range are refused); 0 on success, -1 otherwise. */
int bp_arg_long(const char *s, long lo, long hi, long *out);

#endif
