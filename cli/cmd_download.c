/* cmd_download.c — `lorq download ID [--adapter]`: fetch a model or adapter
 * from a Hugging Face-compatible hub into the shared cache (common/hub.c) and
 * print the snapshot folder, as `huggingface-cli download` does. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "hub.h"
#include "progress.h"

static int download_usage(void) {
    fprintf(stderr,
            "usage: lorq download OWNER/NAME[@REVISION] [--adapter]\n"
            "  Downloads a model (config, tokenizer, safetensors) or, with --adapter, a PEFT adapter\n"
            "  from HF_ENDPOINT (HF_TOKEN as bearer) into HF_HUB_CACHE and prints its folder.\n");
    return 2;
}

int cmd_download(int argc, char **argv) {
    const char *id = NULL;
    lq_hub_kind kind = LQ_HUB_MODEL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--adapter")) kind = LQ_HUB_ADAPTER;
        else if (!strcmp(argv[i], "--model")) kind = LQ_HUB_MODEL;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return download_usage(), 0;
        else if (argv[i][0] == '-' || id) return download_usage();
        else id = argv[i];
    }
    if (!id) return download_usage();
    lq_hub_config cfg;
    lq_error err;
    if (lq_hub_config_from_env(&cfg, &err)) {
        fprintf(stderr, "lorq download: %s\n", err.msg);
        return 2;
    }
    char dir[2048];
    double t0 = lq_now();
    if (lq_hub_snapshot(&cfg, id, kind, dir, sizeof dir, &err)) {
        fprintf(stderr, "lorq download: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "lorq download: %s ready in %.2f s\n", id, lq_now() - t0);
    printf("%s\n", dir);
    return 0;
}
