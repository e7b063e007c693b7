/* known.h — adapter ids for /info and /v1/models: the configured ones and
 * those live workers report resident (refreshed every 2 s; see known.c). */
#ifndef LORQ_GW_KNOWN_H
#define LORQ_GW_KNOWN_H

#include <jansson.h>

#include "gateway.h"

typedef struct lq_known lq_known;

/* Starts the refresh timer on gw->base; NULL when out of memory. Free it
 * after gw->rc (pending replies come back as NULL then). */
lq_known *lq_known_new(lq_gw *gw);
void lq_known_free(lq_known *k);

/* A new JSON array: LORA_ADAPTERS' ids, then the others resident in workers (sorted). */
json_t *lq_known_ids(const lq_gw *gw);

#endif
