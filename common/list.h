/* Intrusive doubly linked lists (the kernel's list_head idiom): a struct
 * list embedded in each element, a struct list as the head, circular so that
 * no insertion or removal has a special case.  An element knows nothing of
 * which list it is on; list_unlink() leaves it pointing at itself, so that
 * unlinking twice is harmless and list_linked() tells whether it is on one.
 *
 * A head must be list_init()ed (or LIST_INIT(name)) before use; so must an
 * element before list_linked() means anything. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct list {
        struct list *prev, *next;
};

#define LIST_INIT(name) {&(name), &(name)}

static inline void list_init(struct list *l) { l->prev = l->next = l; }
static inline bool list_empty(const struct list *head) { return head->next == head; }
static inline bool list_linked(const struct list *l) { return l->next != l; }

static inline void list_insert_between(struct list *l, struct list *prev, struct list *next) {
        l->prev = prev;
        l->next = next;
        prev->next = l;
        next->prev = l;
}

/* At the end (FIFO order, iteration in insertion order) or the front. */
static inline void list_append(struct list *head, struct list *l) { list_insert_between(l, head->prev, head); }
static inline void list_prepend(struct list *head, struct list *l) { list_insert_between(l, head, head->next); }

static inline void list_unlink(struct list *l) {
        l->prev->next = l->next;
        l->next->prev = l->prev;
        l->prev = l->next = l;
}

#define list_entry(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
#define list_first(head, type, member) (list_empty(head) ? NULL : list_entry((head)->next, type, member))

/* Iterate over elements of type (whose struct list is member); safe against
 * unlinking (or freeing) the current element. */
#define list_for_each(pos, tmp, head, type, member)                                                            \
        for (struct list *pos##_l_ = (head)->next, *tmp = pos##_l_->next;                                      \
             pos##_l_ != (head) && ((pos = list_entry(pos##_l_, type, member)), 1);                            \
             pos##_l_ = tmp, tmp = pos##_l_->next)
