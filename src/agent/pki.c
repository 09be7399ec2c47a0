/* `tlsmirror pki`: makes a CA and issues agent/collector certificates for the tunnel (OpenSSL C API). */
#include "agent/pki.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/*
 *   tlsmirror pki init DIR
 *       DIR/ca.key (0600) and DIR/ca.pem: an EC P-256 CA, valid 10 years.
 *   tlsmirror pki issue DIR NAME --agent|--collector [--host NAME|IP ...] [--days N]
 *       DIR/NAME.key (0600) and DIR/NAME.pem, signed by DIR/ca.*: CN=NAME,
 *       extendedKeyUsage clientAuth (agent) or serverAuth (collector),
 *       subjectAltName DNS:NAME plus every --host (IP: or DNS: by its form).
 * Existing files are never overwritten.
 */

#define PKI_CA_DAYS 3650
#define PKI_DAYS 825
#define PKI_MAX_HOSTS 16

static void usage(void)
{
	fprintf(stderr,
		"usage: tlsmirror pki init DIR\n"
		"       tlsmirror pki issue DIR NAME --agent|--collector [--host NAME|IP ...] "
		"[--days N]\n"
		"  init makes DIR/ca.pem + DIR/ca.key; issue makes DIR/NAME.pem + DIR/NAME.key\n"
		"  agents run:     tlsmirror -t HOST:PORT --ca DIR/ca.pem --cert DIR/A.pem "
		"--key DIR/A.key ...\n"
		"  the collector:  tlsmirror -C -l ADDR:PORT --ca DIR/ca.pem --cert DIR/C.pem "
		"--key DIR/C.key ...\n"
		"  (a collector's --host names must match what agents give to -t)\n");
}

static int fail(const char *what, const char *path)
{
	unsigned long e = ERR_get_error();
	fprintf(stderr, "tlsmirror pki: %s%s%s%s%s\n", what, path ? " " : "", path ? path : "",
		e ? ": " : "", e ? ERR_reason_error_string(e) : "");
	ERR_clear_error();
	return 1;
}

static EVP_PKEY *new_key(void)
{
	return EVP_EC_gen("P-256");
}

/* Writes PEM to a new file (O_EXCL) with the given mode. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		fprintf(stderr, "tlsmirror pki: cannot create %s: %s\n", path, strerror(errno));
		return -1;
	}
	FILE *f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		return -1;
	}
	int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
		     : PEM_write_X509(f, cert);
	if (fclose(f) != 0 || !ok) {
		fail("cannot write", path);
		unlink(path);
		return -1;
	}
	return 0;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ex)
		return -1;
	int ok = X509_add_ext(cert, ex, -1);
	X509_EXTENSION_free(ex);
	return ok ? 0 : -1;
}

/* A certificate for key with subject CN=cn, signed by (issuer, ikey) or self. */
static X509 *new_cert(EVP_PKEY *key, const char *cn, long days, X509 *issuer, EVP_PKEY *ikey)
{
	X509 *x = X509_new();
	BIGNUM *bn = BN_new();
	if (!x || !bn)
		goto fail;
	X509_set_version(x, 2);
	if (!BN_rand(bn, 120, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		goto fail;
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"tlsmirror",
				   -1, -1, 0);
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn,
					-1, -1, 0))
		goto fail;
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	if (add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash") < 0 ||
	    add_ext(x, issuer ? issuer : x, NID_authority_key_identifier, "keyid:always") < 0)
		goto fail;
	(void)ikey;
	BN_free(bn);
	return x;
fail:
	BN_free(bn);
	X509_free(x);
	return NULL;
}

static int pki_init(const char *dir)
{
	char kp[4096], cp[4096];
	snprintf(kp, sizeof(kp), "%s/ca.key", dir);
	snprintf(cp, sizeof(cp), "%s/ca.pem", dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "tlsmirror pki: cannot create %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (!access(kp, F_OK) || !access(cp, F_OK)) {
		fprintf(stderr, "tlsmirror pki: %s already holds a CA (ca.key/ca.pem): not "
			"overwriting it\n", dir);
		return 1;
	}
	int rc = 1;
	EVP_PKEY *key = new_key();
	X509 *x = key ? new_cert(key, "tlsmirror CA", PKI_CA_DAYS, NULL, NULL) : NULL;
	if (!x || add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    !X509_sign(x, key, EVP_sha256())) {
		rc = fail("cannot make the CA", NULL);
		goto out;
	}
	if (write_pem(kp, 0600, key, NULL) < 0)
		goto out;
	if (write_pem(cp, 0644, NULL, x) < 0) {
		unlink(kp);
		goto out;
	}
	printf("made CA %s (key %s, keep it secret)\n", cp, kp);
	rc = 0;
out:
	X509_free(x);
	EVP_PKEY_free(key);
	return rc;
}

static int load_ca(const char *dir, X509 **ca, EVP_PKEY **cakey)
{
	char kp[4096], cp[4096];
	snprintf(kp, sizeof(kp), "%s/ca.key", dir);
	snprintf(cp, sizeof(cp), "%s/ca.pem", dir);
	FILE *f = fopen(cp, "r");
	if (!f) {
		fprintf(stderr, "tlsmirror pki: no CA in %s (run `tlsmirror pki init %s` first)\n",
			dir, dir);
		return -1;
	}
	*ca = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	f = fopen(kp, "r");
	if (f) {
		*cakey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (!*ca || !f || !*cakey)
		return fail("cannot read the CA in", dir), -1;
	return 0;
}

/* "DNS:NAME,IP:1.2.3.4,..." from the name and the --host list. */
static void san_list(char *out, size_t len, const char *name, char **hosts, int n)
{
	size_t at = (size_t)snprintf(out, len, "DNS:%s", name);
	for (int i = 0; i < n && at < len; i++) {
		unsigned char b[16];
		int ip = inet_pton(AF_INET, hosts[i], b) == 1 || inet_pton(AF_INET6, hosts[i], b) == 1;
		at += (size_t)snprintf(out + at, len - at, ",%s:%s", ip ? "IP" : "DNS", hosts[i]);
	}
}

static int valid_name(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(s[i] == '-' || s[i] == '.' || s[i] == '_' || (s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
			return 0;
	return s[0] != '.' && s[0] != '-';
}

static int pki_issue(const char *dir, const char *name, int collector, char **hosts, int nh,
		     long days)
{
	char kp[4096], cp[4096], san[4096];
	snprintf(kp, sizeof(kp), "%s/%s.key", dir, name);
	snprintf(cp, sizeof(cp), "%s/%s.pem", dir, name);
	if (!access(kp, F_OK) || !access(cp, F_OK)) {
		fprintf(stderr, "tlsmirror pki: %s or %s exists already: not overwriting\n", kp, cp);
		return 1;
	}
	X509 *ca = NULL, *x = NULL;
	EVP_PKEY *cakey = NULL, *key = NULL;
	int rc = 1;
	if (load_ca(dir, &ca, &cakey) < 0)
		goto out;
	san_list(san, sizeof(san), name, hosts, nh);
	key = new_key();
	x = key ? new_cert(key, name, days, ca, cakey) : NULL;
	if (!x || add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(x, ca, NID_key_usage, "critical,digitalSignature") < 0 ||
	    add_ext(x, ca, NID_ext_key_usage, collector ? "serverAuth" : "clientAuth") < 0 ||
	    add_ext(x, ca, NID_subject_alt_name, san) < 0 || !X509_sign(x, cakey, EVP_sha256())) {
		rc = fail("cannot issue the certificate", NULL);
		goto out;
	}
	if (write_pem(kp, 0600, key, NULL) < 0)
		goto out;
	if (write_pem(cp, 0644, NULL, x) < 0) {
		unlink(kp);
		goto out;
	}
	printf("issued %s certificate %s (key %s), subjectAltName %s\n",
	       collector ? "collector" : "agent", cp, kp, san);
	rc = 0;
out:
	X509_free(x);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(cakey);
	return rc;
}

int pki_main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[0], "init"))
		return pki_init(argv[1]);
	if (argc < 3 || strcmp(argv[0], "issue")) {
		usage();
		return 2;
	}
	char *hosts[PKI_MAX_HOSTS];
	int nh = 0, role = -1;
	long days = PKI_DAYS;
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--agent") || !strcmp(argv[i], "--collector")) {
			int r = !strcmp(argv[i], "--collector");
			if (role >= 0 && role != r) {
				fprintf(stderr, "tlsmirror pki: issue takes --agent or --collector, "
					"not both: a certificate has one role\n");
				return 2;
			}
			role = r;
		} else if (!strcmp(argv[i], "--host") && i + 1 < argc && nh < PKI_MAX_HOSTS) {
			if (!valid_name(argv[i + 1]) && !strchr(argv[i + 1], ':')) {
				fprintf(stderr, "tlsmirror pki: bad --host '%s'\n", argv[i + 1]);
				return 2;
			}
			hosts[nh++] = argv[++i];
		} else if (!strcmp(argv[i], "--days") && i + 1 < argc) {
			days = strtol(argv[++i], NULL, 10);
			if (days < 1 || days > 36500) {
				fprintf(stderr, "tlsmirror pki: --days wants 1..36500\n");
				return 2;
			}
		} else {
			usage();
			return 2;
		}
	}
	if (role < 0 || !valid_name(argv[2])) {
		fprintf(stderr, "tlsmirror pki: issue needs --agent or --collector and a NAME of "
			"letters, digits, '.', '-', '_' (at most 64)\n");
		return 2;
	}
	return pki_issue(argv[1], argv[2], role, hosts, nh, days);
}
