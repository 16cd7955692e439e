#include "hostid.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "hostids.h"

struct host_id {
        uint32_t id;
        unsigned refs;
};

int host_id_take(struct id_pool *ids, struct host_id **out) {
        struct host_id *h;
        uint32_t id;
        int e;

        *out = NULL;
        if (!ids)
                return 0;
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        e = id_pool_take(ids, &id);
        if (e < 0) {
                free(h);
                return e;
        }
        *h = (struct host_id){.id = id, .refs = 1};
        *out = h;
        return 0;
}

struct host_id *host_id_ref(struct host_id *h) {
        if (h)
                h->refs++;
        return h;
}

void host_id_unref(struct id_pool *ids, struct host_id *h) {
        if (!h || --h->refs > 0)
                return;
        id_pool_put(ids, h->id);
        free(h);
}

uid_t host_uid(const struct host_id *h) { return h ? (uid_t)h->id : getuid(); }
gid_t host_gid(const struct host_id *h) { return h ? (gid_t)h->id : getgid(); }
