/* _cleanup_json_: a json_t reference dropped at the end of its scope (the
 * json half of macros.h, apart so that code without jansson can use the rest). */
#pragma once

#include <jansson.h>

static inline void jsonp_unref(json_t **j) { json_decref(*j); }

#define _cleanup_json_ __attribute__((cleanup(jsonp_unref)))
