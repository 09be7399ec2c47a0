/* The table of sources: adding one is its file and one row here. */
#include "sources/source.h"

const struct source_def source_table[] = {
	{ NULL, &ring_source_ops },
};
const size_t source_table_len = sizeof(source_table) / sizeof(source_table[0]);
