/* lorq.c — the command-line tool: one binary, one subcommand per job.
 *
 * The table below is the whole dispatcher; each subcommand lives in its own
 * cli/cmd_*.c and parses its own flags. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
} command;

static const command commands[] = {
    {"convert-gguf", cmd_convert_gguf, "convert-gguf IN.gguf OUT_DIR [--dtype f32|bf16]   GGUF -> Hugging Face folder"},
    {"download", cmd_download, "download OWNER/NAME[@REV] [--adapter]   fetch a model or adapter from the hub into its cache"},
    {"bench", cmd_bench, "bench --model DIR [--threads N]   CPU prefill/decode throughput against the memory-bandwidth bound"},
    {"generate", cmd_generate, "generate --model DIR --prompt TEXT [--max-new-tokens N] [sampling flags]   stream a completion"},
    {"submit", cmd_submit, "submit --adapter ID --prompt TEXT [--stream] [--json] [flags]   enqueue a job on Redis and print its tokens"},
    {"inspect", cmd_inspect, "inspect [--json] FILE.safetensors|MODEL_DIR   list and validate tensors"},
    {"loadgen", cmd_loadgen, "loadgen --adapter ID=steady:RATE ... --duration S|--requests N [--config FILE]   bursty multi-tenant load, JSON report and plots"},
    {"serve", cmd_serve, "serve [--workers N | --autoscale MIN:MAX] [--port N] [--model DIR] [--lora-adapters LIST]   run Redis, gateway and workers"},
    {"tokenize", cmd_tokenize, "tokenize --model DIR [--decode] [--no-special] TEXT|IDS   text <-> token ids"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: lorq COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(out, "  %s\n", commands[i].usage);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "lorq: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
