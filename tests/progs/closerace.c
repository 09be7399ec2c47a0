/* Stress-test program: close() of a TLS socket in one thread races SSL_free of its SSL in another. */
/*
 * usage: closerace CERT KEY ITERATIONS
 *
 * A server thread accepts on 127.0.0.1 and completes handshakes. The main
 * thread, per iteration, connects and handshakes (the capture library then
 * maps the socket to the connection's state in its fd table), and releases
 * two worker threads at once: one close()s the socket, the other SSL_free()s
 * the SSL. Run under the capture library (or built with its sources and
 * -fsanitize=thread/address): the library's state for the connection must
 * survive the race (no use after free, one CLOSE per connection). Prints
 * "DONE N" and exits 0 when all iterations ran.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static SSL_CTX *sctx, *cctx;
static int listen_fd;
static pthread_barrier_t go, done;
static int cur_fd;
static SSL *cur_ssl;
static int iterations;

static void *server(void *arg)
{
	for (int i = 0; i < iterations; i++) {
		int fd = accept(listen_fd, NULL, NULL);
		if (fd < 0)
			break;
		SSL *s = SSL_new(sctx);
		SSL_set_fd(s, fd);
		if (SSL_accept(s) == 1)
			SSL_shutdown(s);
		SSL_free(s);
		close(fd);
	}
	return NULL;
}

static void *closer(void *arg)
{
	for (int i = 0; i < iterations; i++) {
		pthread_barrier_wait(&go);
		close(cur_fd);
		pthread_barrier_wait(&done);
	}
	return NULL;
}

static void *freer(void *arg)
{
	for (int i = 0; i < iterations; i++) {
		pthread_barrier_wait(&go);
		SSL_free(cur_ssl);
		pthread_barrier_wait(&done);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	iterations = atoi(argv[3]);
	signal(SIGPIPE, SIG_IGN); /* the server shuts down connections the client closed */
	sctx = SSL_CTX_new(TLS_server_method());
	cctx = SSL_CTX_new(TLS_client_method());
	if (!sctx || !cctx || SSL_CTX_use_certificate_chain_file(sctx, argv[1]) != 1 ||
	    SSL_CTX_use_PrivateKey_file(sctx, argv[2], SSL_FILETYPE_PEM) != 1)
		return 2;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(listen_fd, 64) < 0 ||
	    getsockname(listen_fd, (struct sockaddr *)&sa, &sl) < 0)
		return 2;
	pthread_barrier_init(&go, NULL, 3);
	pthread_barrier_init(&done, NULL, 3);
	pthread_t ts, tc, tf;
	pthread_create(&ts, NULL, server, NULL);
	pthread_create(&tc, NULL, closer, NULL);
	pthread_create(&tf, NULL, freer, NULL);
	int n = 0;
	for (; n < iterations; n++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			break;
		SSL *ssl = SSL_new(cctx);
		SSL_set_fd(ssl, fd);
		if (SSL_connect(ssl) != 1)
			break;
		cur_fd = fd;
		cur_ssl = ssl;
		pthread_barrier_wait(&go);   /* close() and SSL_free() now, at once */
		pthread_barrier_wait(&done);
	}
	if (n < iterations) {
		fprintf(stderr, "iteration %d failed\n", n);
		return 1;
	}
	pthread_join(tc, NULL);
	pthread_join(tf, NULL);
	pthread_join(ts, NULL);
	printf("DONE %d\n", n);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	return 0;
}
