/* log.h — the gateway's log lines on stderr: "<UTC time> lorq-gateway[<pid>]: <message>". */
#ifndef LORQ_GW_LOG_H
#define LORQ_GW_LOG_H

void lq_gw_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Silences lq_gw_log (the unit tests and the fuzzer call code that logs). */
void lq_gw_log_quiet(int quiet);

#endif
