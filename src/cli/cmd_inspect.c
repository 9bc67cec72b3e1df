/* backprop inspect CKPT: a human summary of a checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backprop/checkpoint.h"
#include "cli.h"

static const char inspect_usage[] =
    "usage: backprop inspect CKPT\n"
    "\n"
    "Prints a checkpoint's architecture, parameter count, where training stood, the last\n"
    "epoch's metrics and the config it was trained with.\n";

static void print_summary(const char *path, const bp_checkpoint *ck)
{
    const bp_net *net = &ck->net;
    const bp_train_state *st = &ck->state;
    bp_cli_line("checkpoint: %s (format version %d, %s)", path, ck->format_version, ck->scalar);
    printf("network: layers");
    for (int i = 0; i <= net->nlayers; i++)
        printf("%s%d", i ? "," : " ", net->sizes[i]);
    printf("; hidden %s, output %s, cost %s\n", bp_activation_name(net->hidden),
           bp_activation_name(net->output), bp_cost_name(net->cost));
    printf("parameters: %zu\n", net->nparams);
    for (int l = 0; l < net->nlayers; l++)
        printf("  layer_%d: W %dx%d, b %d\n", l, net->sizes[l + 1], net->sizes[l],
               net->sizes[l + 1]);
    char opt[256];
    bp_checkpoint_describe_optimizer(ck, opt, sizeof(opt));
    printf("optimizer: %s\n", opt);
    /* The effective config has every key: a run in bf16 says so there. */
    int bf16 = ck->config_text && strstr(ck->config_text, "\nprecision = bf16\n");
    printf("precision: %s\n",
           bf16 ? "bf16 products with float sums (the weights here are float)" : "float");
    /* A checkpoint from before the key has no line: same_ranks, as it ran. */
    const char *mb = ck->config_text ? strstr(ck->config_text, "\nmicro_batch = ") : NULL;
    if (ck->config_text && strstr(ck->config_text, "\nreproducible = any_scale\n") && mb)
        printf("reproducible: any_scale, micro-shards of %ld rows (the same bits at any rank "
               "count)\n",
               strtol(mb + strlen("\nmicro_batch = "), NULL, 10));
    else
        printf("reproducible: same_ranks\n");
    printf("progress: %ld epochs done, %ld steps into the next; global step %ld\n", st->epoch,
           st->batch_in_epoch, st->global_step);
    if (st->n_train > 0) /* what a resume mid-epoch must keep */
        printf("epochs: %ld training examples in batches of %ld\n", st->n_train, st->batch_size);
    printf("run: seed %llu, %d rank%s, %.1f s of training\n", (unsigned long long)st->seed,
           st->ranks, st->ranks == 1 ? "" : "s", st->elapsed_s);
    if (st->nmetrics) {
        const bp_metrics_row *r = &st->metrics[st->nmetrics - 1];
        printf("last epoch %ld:", r->epoch);
        bp_cli_print_metrics(stdout, r);
        printf("\n");
    }
    /* The stored config is the file's text: each line escaped, as a path is. */
    printf("config:\n");
    for (const char *line = ck->config_text; line && *line;) {
        size_t n = strcspn(line, "\n");
        bp_cli_line("%.*s", (int)n, line);
        line += n + (line[n] == '\n');
    }
}

int bp_cmd_inspect(int argc, char **argv)
{
    if (bp_cli_wants_help(argc, argv)) {
        fputs(inspect_usage, stdout);
        return EXIT_OK;
    }
    if (argc != 2) {
        bp_cli_error(0, "inspect: expected one checkpoint path (see backprop inspect --help)");
        return EXIT_BAD_INPUT;
    }
    char err[2048];
    bp_checkpoint ck;
    int rc = bp_checkpoint_read(argv[1], &ck, err, sizeof(err));
    if (rc < 0) {
        bp_cli_error(0, "%s", err);
        return bp_cli_setup_status(rc);
    }
    print_summary(argv[1], &ck);
    bp_checkpoint_free(&ck);
    return EXIT_OK;
}
