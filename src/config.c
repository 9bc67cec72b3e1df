/* The INI config, read with libinih. Keys are described by one table; a custom line
 * reader counts lines so every message can say FILE:LINE (Debian's inih is built
 * without INI_HANDLER_LINENO). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "backprop/config.h"
#include "fileio.h"
#include "internal.h"

typedef enum {
    K_PATH,
    K_LONG,
    K_REAL,
    K_LAYERS,
    K_HIDDEN,
    K_OUTPUT,
    K_COST,
    K_INIT,
    K_SEED,
    K_THREADS,
    K_PROGRESS,
    K_BOOL,
    K_LR_SCHEDULE,
    K_OPTIMIZER,
    K_WEIGHT_DECAY,
    K_PRECISION,
    K_DTYPE,
    K_PLACEMENT
} key_type;

typedef struct {
    const char *section, *name;
    key_type type;
    size_t offset;
    double min, max;   /* for K_LONG and K_REAL */
    const char *range; /* how messages state the range, for reals */
    int required;
    const char *fallback; /* default value, parsed like a config value */
} key_spec;

const char *const bp_lr_schedule_names[4] = {"constant", "step", "cosine", "inverse_scaling"};
const char *const bp_optimizer_names[3] = {"sgd", "adam", "lbfgs"};
const char *const bp_placement_names[4] = {"auto", "replicated", "node", "stream"};

#define BP_MIN_COMM_TIMEOUT 1.0 /* seconds; below it, [comm] timeout is refused */

#define OFF(f) offsetof(bp_config, f)
static const key_spec keys[] = {
    {"data", "train", K_PATH, OFF(train), 0, 0, NULL, 1, NULL},
    {"data", "train_labels", K_PATH, OFF(train_labels), 0, 0, NULL, 0, ""},
    {"data", "validation", K_PATH, OFF(validation), 0, 0, NULL, 0, ""},
    {"data", "validation_labels", K_PATH, OFF(validation_labels), 0, 0, NULL, 0, ""},
    {"data", "validation_split", K_LONG, OFF(validation_split), 0, 1e15, NULL, 0, "0"},
    {"data", "test", K_PATH, OFF(test), 0, 0, NULL, 0, ""},
    {"data", "test_labels", K_PATH, OFF(test_labels), 0, 0, NULL, 0, ""},
    {"data", "limit", K_LONG, OFF(limit), 0, 1e15, NULL, 0, "0"},
    {"data", "placement", K_PLACEMENT, OFF(placement), 0, 0, NULL, 0, "auto"},
    {"data", "max_memory_mb", K_REAL, OFF(max_memory_mb), 0, 1e12, "0 (what the node has) to 1e12",
     0, "0"},
    {"network", "layers", K_LAYERS, OFF(sizes), 0, 0, NULL, 1, NULL},
    {"network", "hidden", K_HIDDEN, OFF(hidden), 0, 0, NULL, 0, "sigmoid"},
    {"network", "output", K_OUTPUT, OFF(output), 0, 0, NULL, 0, "sigmoid"},
    {"network", "cost", K_COST, OFF(cost), 0, 0, NULL, 0, "cross_entropy"},
    {"network", "init", K_INIT, OFF(init), 0, 0, NULL, 0, "gaussian_scaled"},
    {"network", "init_epsilon", K_REAL, OFF(init_epsilon), 1e-300, 1e300,
     "must be > 0 and at most 1e300", 0, "0.12"},
    {"train", "epochs", K_LONG, OFF(epochs), 1, 1e9, NULL, 1, NULL},
    {"train", "batch_size", K_LONG, OFF(batch_size), 1, 1e8, NULL, 1, NULL},
    /* Required, except by lbfgs, whose line search finds each step (finish()). */
    {"train", "learning_rate", K_REAL, OFF(learning_rate), 1e-300, 1e300,
     "must be > 0 and at most 1e300", 0, NULL},
    {"train", "lambda", K_REAL, OFF(lambda), 0, 1e300, "must be >= 0 and at most 1e300", 0, "0"},
    {"train", "momentum", K_REAL, OFF(momentum), 0, 1 - 1e-12, "0 <= momentum < 1", 0, "0"},
    {"train", "optimizer", K_OPTIMIZER, OFF(optimizer), 0, 0, NULL, 0, "sgd"},
    {"train", "beta1", K_REAL, OFF(beta1), 0, 1 - 1e-12, "0 <= beta1 < 1", 0, "0.9"},
    {"train", "beta2", K_REAL, OFF(beta2), 0, 1 - 1e-12, "0 <= beta2 < 1", 0, "0.999"},
    {"train", "adam_epsilon", K_REAL, OFF(adam_epsilon), 1e-300, 1, "must be > 0 and at most 1", 0,
     "1e-8"},
    {"train", "weight_decay", K_WEIGHT_DECAY, OFF(decoupled), 0, 0, NULL, 0, "coupled"},
    {"train", "precision", K_PRECISION, OFF(bf16), 0, 0, NULL, 0, "float"},
    {"train", "lbfgs_history", K_LONG, OFF(lbfgs_history), 1, 100, NULL, 0, "10"},
    {"train", "lbfgs_tolerance", K_REAL, OFF(lbfgs_tolerance), 0, 1e300,
     "must be >= 0 and at most 1e300", 0, "1e-5"},
    {"train", "lr_schedule", K_LR_SCHEDULE, OFF(lr_schedule), 0, 0, NULL, 0, "constant"},
    {"train", "lr_step_epochs", K_LONG, OFF(lr_step_epochs), 1, 1e9, NULL, 0, "10"},
    {"train", "lr_gamma", K_REAL, OFF(lr_gamma), 1e-300, 1, "must be > 0 and at most 1", 0, "0.1"},
    {"train", "lr_min", K_REAL, OFF(lr_min), 0, 1e300, "must be >= 0 and at most 1e300", 0, "0"},
    {"train", "lr_power", K_REAL, OFF(lr_power), 0, 10, "0 to 10", 0, "0.5"},
    {"train", "early_stopping", K_LONG, OFF(early_stopping), 0, 1e9, NULL, 0, "0"},
    {"train", "seed", K_SEED, OFF(seed), 0, 0, NULL, 0, "1"},
    {"train", "threads", K_THREADS, OFF(threads), 0, 0, NULL, 0, "auto"},
    {"checkpoint", "dir", K_PATH, OFF(checkpoint_dir), 0, 0, NULL, 0, ""},
    {"checkpoint", "every_epochs", K_LONG, OFF(every_epochs), 0, 1e9, NULL, 0, "1"},
    {"checkpoint", "every_steps", K_LONG, OFF(every_steps), 0, 1e15, NULL, 0, "0"},
    {"checkpoint", "every_seconds", K_REAL, OFF(every_seconds), 0, 1e9, "0 (off) to 1e9 seconds", 0,
     "0"},
    {"checkpoint", "keep", K_LONG, OFF(keep), 0, 1e9, NULL, 0, "3"},
    {"comm", "timeout", K_REAL, OFF(comm_timeout), 0, 1e9, "0 (off), or 1 to 1e9 seconds", 0,
     "300"},
    {"comm", "overlap", K_BOOL, OFF(overlap), 0, 0, NULL, 0, "true"},
    {"comm", "dtype", K_DTYPE, OFF(comm_bf16), 0, 0, NULL, 0, "float"},
    {"comm", "bucket_mb", K_REAL, OFF(bucket_mb), 0.001, 1024, "0.001 to 1024", 0, "4"},
    {"log", "metrics", K_PATH, OFF(metrics), 0, 0, NULL, 0, ""},
    {"log", "progress", K_PROGRESS, OFF(progress), 0, 0, NULL, 0, "auto"},
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))
static const char *const sections[] = {"data", "network", "train", "checkpoint", "comm", "log"};
#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

typedef struct {
    bp_config *cfg;
    const char *name; /* file name for messages */
    const char *text; /* reader position */
    int line;
    int key_line[NKEYS];
    int section_line[NSECTIONS];
    int last_line;
    char *err;
    size_t errlen;
    int failed;
} parse_ctx;

static int fail_at(parse_ctx *ctx, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Keeps the first error only: it is the one a user fixes first. */
static int fail_at(parse_ctx *ctx, int line, const char *fmt, ...)
{
    if (ctx->failed)
        return 0;
    ctx->failed = 1;
    char what[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(ctx->err, ctx->errlen, "%s:%d: %s", ctx->name, line, what);
    else
        snprintf(ctx->err, ctx->errlen, "%s: %s", ctx->name, what);
    return 0;
}

static int parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno)
        return -1;
    *out = v;
    return 0;
}

/* -1 when s is not a number, -2 when it is one too large (or too small) for a double. */
static int parse_real(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end)
        return -1;
    /* ERANGE also flags results too small for a normal double (1e-310): those are numbers
     * all the same, and the range check decides. */
    if ((errno == ERANGE && fabs(v) > 1) || !isfinite(v))
        return isnan(v) ? -1 : -2;
    *out = v;
    return 0;
}

static int parse_layers(parse_ctx *ctx, const char *value, int line)
{
    bp_config *cfg = ctx->cfg;
    int n = 0;
    const char *p = value;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > 1000000)
            return fail_at(ctx, line,
                           "[network] layers: expected positive integers separated by commas "
                           "(e.g. 784, 100, 10), got '%s'",
                           value);
        if (n == BP_MAX_LAYERS)
            return fail_at(ctx, line, "[network] layers: at most %d sizes", BP_MAX_LAYERS);
        cfg->sizes[n++] = (int)v;
        while (isspace((unsigned char)*end))
            end++;
        if (*end == ',')
            end++;
        else if (*end)
            return fail_at(ctx, line, "[network] layers: unexpected '%c' in '%s'", *end, value);
        while (isspace((unsigned char)*end))
            end++;
        p = end;
    }
    if (n < 2)
        return fail_at(ctx, line, "[network] layers: need at least an input and an output size");
    cfg->nsizes = n;
    return 1;
}

static int set_enum(parse_ctx *ctx, const key_spec *k, const char *value, int line)
{
    void *field = (char *)ctx->cfg + k->offset;
    int rc = 0;
    switch (k->type) {
    case K_HIDDEN:
        rc = bp_activation_parse(value, field);
        if (rc == 0 && *(bp_activation *)field == BP_SOFTMAX)
            rc = -1;
        if (rc < 0)
            return fail_at(ctx, line,
                           "[network] hidden: expected sigmoid, relu, tanh or linear, "
                           "got '%s'",
                           value);
        return 1;
    case K_OUTPUT:
        rc = bp_activation_parse(value, field);
        if (rc == 0 && (*(bp_activation *)field == BP_RELU || *(bp_activation *)field == BP_TANH))
            rc = -1;
        if (rc < 0)
            return fail_at(ctx, line,
                           "[network] output: expected sigmoid, softmax or linear, "
                           "got '%s'",
                           value);
        return 1;
    case K_COST:
        if (bp_cost_parse(value, field) < 0)
            return fail_at(ctx, line,
                           "[network] cost: expected quadratic or cross_entropy, "
                           "got '%s'",
                           value);
        return 1;
    case K_INIT:
        if (bp_init_parse(value, field) < 0)
            return fail_at(ctx, line,
                           "[network] init: expected gaussian_scaled, uniform, xavier "
                           "or he, got '%s'",
                           value);
        return 1;
    case K_PROGRESS: {
        static const char *const names[] = {"auto", "on", "off"};
        for (int i = 0; i < 3; i++)
            if (strcmp(value, names[i]) == 0) {
                *(bp_progress *)field = (bp_progress)i;
                return 1;
            }
        return fail_at(ctx, line, "[log] progress: expected auto, on or off, got '%s'", value);
    }
    case K_OPTIMIZER:
        for (int i = 0; i < 3; i++)
            if (strcmp(value, bp_optimizer_names[i]) == 0) {
                *(bp_optimizer *)field = (bp_optimizer)i;
                return 1;
            }
        return fail_at(ctx, line, "[train] optimizer: expected sgd, adam or lbfgs, got '%s'",
                       value);
    case K_PLACEMENT:
        for (int i = 0; i < 4; i++)
            if (strcmp(value, bp_placement_names[i]) == 0) {
                *(bp_placement *)field = (bp_placement)i;
                return 1;
            }
        return fail_at(ctx, line,
                       "[data] placement: expected auto, replicated, node or stream, got '%s'",
                       value);
    case K_PRECISION:
    case K_DTYPE:
        if (strcmp(value, "float") != 0 && strcmp(value, "bf16") != 0)
            return fail_at(ctx, line, "[%s] %s: expected float or bf16, got '%s'", k->section,
                           k->name, value);
        *(int *)field = strcmp(value, "bf16") == 0;
        return 1;
    case K_WEIGHT_DECAY:
        if (strcmp(value, "coupled") != 0 && strcmp(value, "decoupled") != 0)
            return fail_at(ctx, line,
                           "[train] weight_decay: expected coupled or decoupled, got '%s'", value);
        *(int *)field = strcmp(value, "decoupled") == 0;
        return 1;
    case K_LR_SCHEDULE:
        for (int i = 0; i < 4; i++)
            if (strcmp(value, bp_lr_schedule_names[i]) == 0) {
                *(bp_lr_schedule *)field = (bp_lr_schedule)i;
                return 1;
            }
        return fail_at(ctx, line,
                       "[train] lr_schedule: expected constant, step, cosine or inverse_scaling, "
                       "got '%s'",
                       value);
    case K_BOOL:
        if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0)
            return fail_at(ctx, line, "[%s] %s: expected true or false, got '%s'", k->section,
                           k->name, value);
        *(int *)field = value[0] == 't';
        return 1;
    default:
        return fail_at(ctx, line, "internal: bad key type");
    }
}

static int set_number(parse_ctx *ctx, const key_spec *k, const char *value, int line)
{
    void *field = (char *)ctx->cfg + k->offset;
    long lv;
    double dv;
    switch (k->type) {
    case K_LONG:
        if (parse_long(value, &lv) < 0)
            return fail_at(ctx, line, "[%s] %s: expected an integer, got '%s'", k->section, k->name,
                           value);
        if (lv < k->min || lv > k->max)
            return fail_at(ctx, line, "[%s] %s: %ld is out of range (%.0f to %.0f)", k->section,
                           k->name, lv, k->min, k->max);
        *(long *)field = lv;
        return 1;
    case K_REAL:
        switch (parse_real(value, &dv)) {
        case -1:
            return fail_at(ctx, line, "[%s] %s: expected a number, got '%s'", k->section, k->name,
                           value);
        case -2:
            return fail_at(ctx, line, "[%s] %s: %s is out of range (%s)", k->section, k->name,
                           value, k->range);
        }
        if (dv < k->min || dv > k->max)
            return fail_at(ctx, line, "[%s] %s: %g is out of range (%s)", k->section, k->name, dv,
                           k->range);
        *(double *)field = dv;
        return 1;
    case K_SEED: {
        char *end;
        errno = 0;
        unsigned long long u = strtoull(value, &end, 10);
        if (!isdigit((unsigned char)value[0]) || *end || errno)
            return fail_at(ctx, line, "[train] seed: expected an integer from 0 to %llu, got '%s'",
                           (unsigned long long)UINT64_MAX, value);
        *(uint64_t *)field = (uint64_t)u;
        return 1;
    }
    case K_THREADS:
        if (strcmp(value, "auto") == 0) {
            *(int *)field = 0;
            return 1;
        }
        if (parse_long(value, &lv) < 0 || lv < 1 || lv > 4096)
            return fail_at(ctx, line, "[train] threads: expected auto or 1..4096, got '%s'", value);
        *(int *)field = (int)lv;
        return 1;
    default:
        return set_enum(ctx, k, value, line);
    }
}

static int set_value(parse_ctx *ctx, const key_spec *k, const char *value, int line)
{
    if (k->type == K_PATH) {
        if (strlen(value) >= BP_PATH_MAX)
            return fail_at(ctx, line, "[%s] %s: longer than %d characters", k->section, k->name,
                           BP_PATH_MAX - 1);
        strcpy((char *)ctx->cfg + k->offset, value);
        return 1;
    }
    if (k->type == K_LAYERS)
        return parse_layers(ctx, value, line);
    return set_number(ctx, k, value, line);
}

static int find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int find_section(const char *section)
{
    for (size_t i = 0; i < NSECTIONS; i++)
        if (strcmp(sections[i], section) == 0)
            return (int)i;
    return -1;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *ctx = user;
    if (!*section)
        return fail_at(ctx, ctx->line, "'%s' is outside any section", name);
    if (find_section(section) < 0)
        return 0; /* reported by the reader when it saw the header */
    int i = find_key(section, name);
    if (i < 0)
        return fail_at(ctx, ctx->line, "unknown key '%s' in [%s]", name, section);
    if (ctx->key_line[i])
        return fail_at(ctx, ctx->line, "[%s] %s is set twice (first on line %d)", section, name,
                       ctx->key_line[i]);
    ctx->key_line[i] = ctx->line;
    /* An empty optional path means "not set", so the effective config re-parses. */
    if (!*value && (keys[i].type != K_PATH || keys[i].required))
        return fail_at(ctx, ctx->line, "[%s] %s: empty value", section, name);
    return set_value(ctx, &keys[i], value, ctx->line);
}

/* Sees every line before inih does: counts lines, and checks section headers (inih
 * does not report a section with no keys, so an unknown one would pass silently). */
static void check_header(parse_ctx *ctx, const char *line)
{
    while (isspace((unsigned char)*line))
        line++;
    if (*line != '[')
        return;
    const char *end = strchr(line, ']');
    if (!end)
        return; /* inih reports the syntax error */
    char name[64];
    size_t len = (size_t)(end - line - 1);
    if (len >= sizeof(name)) {
        fail_at(ctx, ctx->line, "unknown section [%.*s]", (int)len, line + 1);
        return;
    }
    memcpy(name, line + 1, len);
    name[len] = 0;
    int s = find_section(name);
    if (s < 0)
        fail_at(ctx, ctx->line,
                "unknown section [%s] (known: data, network, train, "
                "checkpoint, comm, log)",
                name);
    else if (!ctx->section_line[s])
        ctx->section_line[s] = ctx->line;
}

static char *reader(char *str, int num, void *stream)
{
    parse_ctx *ctx = stream;
    if (!*ctx->text)
        return NULL;
    const char *nl = strchr(ctx->text, '\n');
    size_t len = nl ? (size_t)(nl - ctx->text) + 1 : strlen(ctx->text);
    ctx->line++;
    if (len >= (size_t)num) {
        fail_at(ctx, ctx->line, "line longer than %d characters", num - 2);
        len = (size_t)num - 1;
    }
    memcpy(str, ctx->text, len);
    str[len] = 0;
    ctx->text = nl ? nl + 1 : ctx->text + strlen(ctx->text);
    check_header(ctx, str);
    return str;
}

static int apply_set(parse_ctx *ctx, const char *set)
{
    char label[300];
    snprintf(label, sizeof(label), "--set %s", set);
    ctx->name = label;
    const char *dot = strchr(set, '.'), *eq = strchr(set, '=');
    if (!dot || !eq || dot > eq) {
        fail_at(ctx, 0, "expected SECTION.KEY=VALUE");
        return -1;
    }
    char section[64], name[64];
    size_t slen = (size_t)(dot - set), nlen = (size_t)(eq - dot - 1);
    if (slen >= sizeof(section) || nlen >= sizeof(name)) {
        fail_at(ctx, 0, "unknown key");
        return -1;
    }
    memcpy(section, set, slen);
    section[slen] = 0;
    memcpy(name, dot + 1, nlen);
    name[nlen] = 0;
    int i = find_key(section, name);
    if (i < 0) {
        fail_at(ctx, 0,
                find_section(section) < 0 ? "unknown section [%s]" : "unknown key '%s' in [%s]",
                find_section(section) < 0 ? section : name, section);
        return -1;
    }
    /* As a file may not set a key twice: which of two values was meant is not ours to
     * guess. */
    if (ctx->key_line[i] < 0) {
        fail_at(ctx, 0, "[%s] %s is set twice on the command line", section, name);
        return -1;
    }
    ctx->key_line[i] = -1; /* set, and not on any line of the file */
    if (!eq[1] && (keys[i].type != K_PATH || keys[i].required)) {
        fail_at(ctx, 0, "[%s] %s: empty value", section, name);
        return -1;
    }
    return set_value(ctx, &keys[i], eq + 1, 0) ? 0 : -1;
}

/* The line to blame for a cross-key problem: the key's own, else its section's. A key
 * that came from --set is blamed on the command line. */
static int line_of(parse_ctx *ctx, const char *section, const char *name)
{
    int i = find_key(section, name);
    if (ctx->key_line[i] < 0) {
        ctx->name = "--set";
        return 0;
    }
    if (ctx->key_line[i] > 0)
        return ctx->key_line[i];
    int s = find_section(section);
    return ctx->section_line[s] > 0 ? ctx->section_line[s] : ctx->last_line;
}

static void default_paths(bp_config *cfg, const char *file)
{
    if (!cfg->checkpoint_dir[0]) {
        const char *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        size_t len = strlen(base);
        if (len > 4 && strcmp(base + len - 4, ".ini") == 0)
            len -= 4;
        snprintf(cfg->checkpoint_dir, BP_PATH_MAX, "runs/%.*s", (int)len, base);
    }
    if (!cfg->metrics[0])
        snprintf(cfg->metrics, BP_PATH_MAX, "%.*s/metrics.csv", BP_PATH_MAX - 20,
                 cfg->checkpoint_dir);
}

static int finish(parse_ctx *ctx, const char *file)
{
    ctx->name = file;
    for (size_t i = 0; i < NKEYS && !ctx->failed; i++) {
        if (ctx->key_line[i])
            continue;
        if (keys[i].required)
            fail_at(ctx, line_of(ctx, keys[i].section, keys[i].name),
                    "missing required key '%s' in [%s]", keys[i].name, keys[i].section);
        else if (keys[i].fallback)
            set_value(ctx, &keys[i], keys[i].fallback, 0);
    }
    if (ctx->failed)
        return BP_EINVAL;
    bp_config *cfg = ctx->cfg;
    if (cfg->learning_rate == 0) { /* not set: the key without a fallback */
        if (cfg->optimizer != BP_OPT_LBFGS) {
            fail_at(ctx, line_of(ctx, "train", "learning_rate"),
                    "missing required key 'learning_rate' in [train]");
            return BP_EINVAL;
        }
        cfg->learning_rate = 1; /* unused by lbfgs; keeps the effective config valid */
    }
    char why[256];
    if (bp_net_validate(cfg->nsizes, cfg->sizes, cfg->hidden, cfg->output, cfg->cost, why,
                        sizeof(why)) < 0) {
        fail_at(ctx, line_of(ctx, "network", "cost"), "[network] %s", why);
        return BP_EINVAL;
    }
    if (cfg->optimizer != BP_OPT_SGD && cfg->momentum != 0) {
        fail_at(ctx, line_of(ctx, "train", "momentum"),
                cfg->optimizer == BP_OPT_ADAM
                    ? "[train] momentum applies to optimizer = sgd (adam has beta1)"
                    : "[train] momentum applies to optimizer = sgd (lbfgs has no momentum)");
        return BP_EINVAL;
    }
    if (cfg->optimizer == BP_OPT_LBFGS && cfg->lr_schedule != BP_LR_CONSTANT) {
        fail_at(ctx, line_of(ctx, "train", "lr_schedule"),
                "[train] lr_schedule = %s: lbfgs finds each step by a line search (use sgd or "
                "adam for a schedule)",
                bp_lr_schedule_names[cfg->lr_schedule]);
        return BP_EINVAL;
    }
    /* The watchdog (src/comm.c) looks every 0.1 s and lets ranks report 0.2 s apart: a
     * limit under a second would be missed by that much, and met by a busy node's
     * scheduling alone. */
    if (cfg->comm_timeout > 0 && cfg->comm_timeout < BP_MIN_COMM_TIMEOUT) {
        fail_at(ctx, line_of(ctx, "comm", "timeout"),
                "[comm] timeout: %g s is below the %g s the watchdog can honour (0 turns it "
                "off)",
                cfg->comm_timeout, BP_MIN_COMM_TIMEOUT);
        return BP_EINVAL;
    }
    if (cfg->validation[0] && cfg->validation_split) {
        fail_at(ctx, line_of(ctx, "data", "validation_split"),
                "[data] set validation or validation_split, not both");
        return BP_EINVAL;
    }
    default_paths(cfg, file);
    return 0;
}

int bp_config_parse(bp_config *cfg, const char *name, const char *text, const char *const *sets,
                    int nsets, char *err, size_t errlen)
{
    parse_ctx ctx = {.cfg = cfg, .name = name, .text = text, .err = err, .errlen = errlen};
    memset(cfg, 0, sizeof(*cfg));
    /* Editors on Windows start UTF-8 files with a byte-order mark: not part of line 1. */
    if (strncmp(ctx.text, "\xEF\xBB\xBF", 3) == 0)
        ctx.text += 3;
    int rc = ini_parse_stream(reader, &ctx, handler, &ctx);
    ctx.last_line = ctx.line;
    if (rc > 0 && !ctx.failed)
        fail_at(&ctx, rc, "syntax error: expected [section] or key = value");
    else if (rc < 0 && !ctx.failed)
        fail_at(&ctx, 0, "cannot parse (out of memory)");
    for (int i = 0; i < nsets && !ctx.failed; i++)
        apply_set(&ctx, sets[i]);
    if (ctx.failed)
        return BP_EINVAL;
    return finish(&ctx, name);
}

int bp_config_load(bp_config *cfg, const char *path, const char *const *sets, int nsets, char *err,
                   size_t errlen)
{
    int fd = bp__input_open(path, NULL, err, errlen);
    if (fd < 0)
        return fd;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return bp__fail(err, errlen, BP_ENOMEM, "%s: cannot open (%s)", path, strerror(errno));
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *t = bp__realloc(text, ncap, 1);
            if (!t) {
                rc = bp__fail(err, errlen, BP_ENOMEM, "%s: out of memory", path);
                goto cleanup;
            }
            text = t, cap = ncap;
        }
        size_t got = fread(text + len, 1, 4096, f);
        len += got;
        if (got < 4096)
            break;
    }
    if (ferror(f)) {
        rc = bp__fail(err, errlen, BP_EIO, "%s: read error", path);
        goto cleanup;
    }
    text[len] = 0;
    if (strlen(text) != len) {
        rc = bp__fail(err, errlen, BP_EINVAL, "%s: not a text file (contains NUL bytes)", path);
        goto cleanup;
    }
    rc = bp_config_parse(cfg, path, text, sets, nsets, err, errlen);
cleanup:
    bp__free(text);
    fclose(f);
    return rc;
}

size_t bp_config_format(const bp_config *c, char *buf, size_t len)
{
    char layers[BP_MAX_LAYERS * 9] = "";
    for (int i = 0, at = 0; i < c->nsizes; i++)
        at += snprintf(layers + at, sizeof(layers) - (size_t)at, i ? ", %d" : "%d", c->sizes[i]);
    char threads[16] = "auto";
    if (c->threads)
        snprintf(threads, sizeof(threads), "%d", c->threads);
    static const char *const progress[] = {"auto", "on", "off"};
    int n = snprintf(
        buf, len,
        "[data]\ntrain = %s\ntrain_labels = %s\nvalidation = %s\nvalidation_labels = %s\n"
        "validation_split = %ld\ntest = %s\ntest_labels = %s\nlimit = %ld\nplacement = %s\n"
        "max_memory_mb = %.17g\n\n"
        "[network]\nlayers = %s\nhidden = %s\noutput = %s\ncost = %s\ninit = %s\n"
        "init_epsilon = %.17g\n\n"
        "[train]\nepochs = %ld\nbatch_size = %ld\nlearning_rate = %.17g\nlambda = %.17g\n"
        "momentum = %.17g\noptimizer = %s\nbeta1 = %.17g\nbeta2 = %.17g\n"
        "adam_epsilon = %.17g\nweight_decay = %s\nprecision = %s\nlbfgs_history = "
        "%ld\nlbfgs_tolerance = %.17g\n"
        "lr_schedule = %s\nlr_step_epochs = %ld\nlr_gamma "
        "= %.17g\n"
        "lr_min = %.17g\nlr_power = %.17g\nearly_stopping = %ld\nseed = %llu\nthreads = %s\n\n"
        "[checkpoint]\ndir = %s\nevery_epochs = %ld\nevery_steps = %ld\n"
        "every_seconds = %.17g\nkeep = %ld\n\n"
        "[comm]\ntimeout = %.17g\noverlap = %s\ndtype = %s\nbucket_mb = %.17g\n\n"
        "[log]\nmetrics = %s\nprogress = %s\n",
        c->train, c->train_labels, c->validation, c->validation_labels, c->validation_split,
        c->test, c->test_labels, c->limit, bp_placement_names[c->placement], c->max_memory_mb,
        layers, bp_activation_name(c->hidden), bp_activation_name(c->output), bp_cost_name(c->cost),
        bp_init_name(c->init), c->init_epsilon, c->epochs, c->batch_size, c->learning_rate,
        c->lambda, c->momentum, bp_optimizer_names[c->optimizer], c->beta1, c->beta2,
        c->adam_epsilon, c->decoupled ? "decoupled" : "coupled", c->bf16 ? "bf16" : "float",
        c->lbfgs_history, c->lbfgs_tolerance, bp_lr_schedule_names[c->lr_schedule],
        c->lr_step_epochs, c->lr_gamma, c->lr_min, c->lr_power, c->early_stopping,
        (unsigned long long)c->seed, threads, c->checkpoint_dir, c->every_epochs, c->every_steps,
        c->every_seconds, c->keep, c->comm_timeout, c->overlap ? "true" : "false",
        c->comm_bf16 ? "bf16" : "float", c->bucket_mb, c->metrics, progress[c->progress]);
    return n < 0 ? 0 : (size_t)n;
}
