/* Attach test target without dlopen: statically linked, sleeps until killed. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("ready\n");
	fflush(stdout);
	for (;;)
		sleep(1);
}
