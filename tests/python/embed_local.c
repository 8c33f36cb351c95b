/*
 * Python loaded the way uWSGI's plugin may load it: libpython dlopen'ed with
 * RTLD_LOCAL, so dlsym(RTLD_DEFAULT) cannot see it. A second thread must
 * still find the interpreter (dl_iterate_phdr + RTLD_NOLOAD) and walk the
 * main thread's frames while it sleeps in Python.
 *
 *   embed_local /path/to/libpython3.X.so
 * prints the frames and "OK", or "FAIL ..." and exits 1.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mem.h"
#include "python.h"

static pid_t main_tid;
static pthread_t main_thread;
static int result = 1;

static void *watcher(void *arg)
{
	(void)arg;
	if (py_present() || py_init()) {
		printf("FAIL py_init before Python was loaded\n");
		return NULL;
	}
	for (int i = 0; i < 2000; i++) {
		usleep(2000);
		if (!py_init())
			continue;
		uintptr_t ts = py_tstate_find(mem_read_safe, main_tid,
					      (unsigned long)main_thread);
		if (!ts)
			continue;
		struct py_frame f[16];
		struct py_walk_info info;
		py_walk(mem_read_safe, ts, f, 16, &info);
		py_resolve_lines(mem_read_safe, f, info.n);
		if (info.n < 3 || strcmp(f[0].func, "inner") != 0)
			continue;
		printf("CPython %s\n", py_version_string());
		for (int j = 0; j < info.n; j++)
			printf("%s:%d:%s\n", f[j].file, f[j].line, f[j].func);
		result = !(info.n == 3 && !info.damaged &&
			   strcmp(f[0].file, "<string>") == 0 && f[0].line == 3 &&
			   strcmp(f[1].func, "outer") == 0 && f[1].line == 5 &&
			   strcmp(f[2].func, "<module>") == 0 && f[2].line == 6);
		return NULL;
	}
	printf("FAIL no frames found\n");
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	main_tid = (pid_t)syscall(SYS_gettid);
	main_thread = pthread_self();
	pthread_t t;
	pthread_create(&t, NULL, watcher, NULL);
	usleep(50000);
	void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		printf("FAIL dlopen: %s\n", dlerror());
		return 1;
	}
	void (*init)(void) = (void (*)(void))dlsym(h, "Py_Initialize");
	int (*run)(const char *) = (int (*)(const char *))dlsym(h, "PyRun_SimpleString");
	if (!init || !run)
		return 1;
	if (dlsym(RTLD_DEFAULT, "_PyRuntime")) {
		printf("FAIL libpython is global: test would prove nothing\n");
		return 1;
	}
	init();
	run("import time\n"
	    "def inner():\n"
	    "    time.sleep(0.6)\n"
	    "def outer():\n"
	    "    inner()\n"
	    "outer()\n");
	pthread_join(t, NULL);
	printf(result ? "FAIL\n" : "OK\n");
	return result;
}
