/* `tlsmirror pki`: a CA and certificates for the tunnel, so a first deployment needs no openssl commands. */
#ifndef TLSMIRROR_PKI_H
#define TLSMIRROR_PKI_H

/* argv after "pki": init DIR | issue DIR NAME --agent|--collector [--host H ...].
 * Returns the exit status. */
int pki_main(int argc, char **argv);

#endif
