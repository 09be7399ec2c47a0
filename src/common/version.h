/* The version tlsmirror reports (tlsmirror -V, the pcapng section header). */
#ifndef TLSMIRROR_VERSION_H
#define TLSMIRROR_VERSION_H

#ifndef TLSMIRROR_VERSION
#define TLSMIRROR_VERSION "0.1.0"
#endif

#endif
