/* The worker's capabilities and no_new_privs (sandbox/capabilities.h). */
#include "capabilities.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>

#include "smallfile.h"

int capabilities_last(int *out, struct jail_error *e) {
        char buf[32];
        long r = small_file_read(AT_FDCWD, "/proc/sys/kernel/cap_last_cap", buf, sizeof(buf));
        int last;

        if (r < 0)
                return jail_fail(e, (int)r, "read /proc/sys/kernel/cap_last_cap");
        last = atoi(buf);
        if (last <= 0 || last > 255)
                return jail_fail(e, -EINVAL, "read /proc/sys/kernel/cap_last_cap (\"%s\")", buf);
        *out = last;
        return 0;
}

int capabilities_drop_all(int last_cap, struct jail_error *e) {
        struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
        struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

        for (int cap = 0; cap <= last_cap; cap++)
                if (prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) < 0 && errno != EINVAL)
                        return jail_fail(e, -errno, "prctl PR_CAPBSET_DROP %d", cap);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                return jail_fail(e, -errno, "prctl PR_CAP_AMBIENT_CLEAR_ALL");
        memset(data, 0, sizeof(data));
        if (syscall(SYS_capset, &header, data) < 0)
                return jail_fail(e, -errno, "capset (drop all capabilities)");
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return jail_fail(e, -errno, "prctl PR_SET_NO_NEW_PRIVS");
        return 0;
}
