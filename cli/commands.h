/* commands.h — the subcommands of bin/lorq. Each takes the arguments after its
 * own name (argv[0] is the subcommand) and returns the process exit status. */
#ifndef LORQ_CLI_COMMANDS_H
#define LORQ_CLI_COMMANDS_H

int cmd_convert_gguf(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_submit(int argc, char **argv);
int cmd_download(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_loadgen(int argc, char **argv);

#endif
