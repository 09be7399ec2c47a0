/* The entry point tlsmirror attach calls after loading the library into a running process. */
#include "capture/capture.h"

#include <errno.h>

/* Called once, in a thread stopped by the attaching tracer, after dlopen:
 * nothing calls our hooks yet (the library is loaded RTLD_LOCAL and no GOT
 * points at it). Takes the agent's socket (none: $TLSMIRROR_SOCKET or the
 * default, as read by the constructor), then patches every loaded object.
 * Returns the objects that could not be patched (>= 0) or -errno. */
__attribute__((visibility("default"))) int tlsmirror_attached(const char *sock_path)
{
	int saved = errno;
	int rc = 0;
	if (sock_path && *sock_path)
		rc = cap_set_socket(sock_path);
	if (!rc)
		rc = got_patch_loaded();
	errno = saved;
	return rc;
}

/* tlsmirror attach failed after tlsmirror_attached(): unhooks every object
 * again, so that the library can be unloaded (no thread can enter it any
 * more once this returns, except one already inside a hook). 0 or -errno. */
__attribute__((visibility("default"))) int tlsmirror_detach(void)
{
	int saved = errno;
	int rc = got_unpatch_loaded();
	errno = saved;
	return rc;
}
