/* Replay driver: runs a fuzz target over files and corpus directories, so a crash found once stays a test. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs the target over one file. Returns 0 or negative errno (file unreadable). */
static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	int err = 0;
	if (!f)
		return -errno;
	if (fseek(f, 0, SEEK_END) < 0) {
		err = -errno;
		goto out;
	}
	long n = ftell(f);
	rewind(f);
	buf = malloc(n > 0 ? (size_t)n : 1);
	if (n < 0 || !buf) {
		err = -ENOMEM;
		goto out;
	}
	if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
		err = -EIO;
		goto out;
	}
	LLVMFuzzerTestOneInput(buf, (size_t)n);
	printf("replay: ok %s (%ld bytes)\n", path, n);
out:
	free(buf);
	fclose(f);
	return err;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* Every regular file of a directory, in name order. Returns how many failed to read. */
static int replay_dir(const char *dir)
{
	struct dirent **ents;
	char path[4096];
	int bad = 0;
	int n = scandir(dir, &ents, NULL, by_name);
	if (n < 0) {
		fprintf(stderr, "replay: cannot read %s: %s\n", dir, strerror(errno));
		return 1;
	}
	for (int i = 0; i < n; i++) {
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name);
		if (ents[i]->d_name[0] != '.' && !stat(path, &st) && S_ISREG(st.st_mode) &&
		    replay_file(path)) {
			fprintf(stderr, "replay: cannot read %s\n", path);
			bad++;
		}
		free(ents[i]);
	}
	free(ents);
	return bad;
}

int main(int argc, char **argv)
{
	int bad = 0;
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			bad++;
		} else if (S_ISDIR(st.st_mode)) {
			bad += replay_dir(argv[i]);
		} else if (replay_file(argv[i])) {
			fprintf(stderr, "replay: cannot read %s\n", argv[i]);
			bad++;
		}
	}
	return bad ? 1 : 0;
}
