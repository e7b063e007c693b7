/* admin.h — the authenticated admin API (admin.c): adapter preload/unload on every worker. */
#ifndef LORQ_GW_ADMIN_H
#define LORQ_GW_ADMIN_H

#include <event2/http.h>

#include "gateway.h"

/* Answers a request under /admin/ (returns 1), or returns 0 for other paths. */
int lq_route_admin(lq_gw *gw, struct evhttp_request *req, const char *path);

#endif
