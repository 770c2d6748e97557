package onnx

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

// trim_heap hands the C heap's free memory back to the operating system
// with glibc's malloc_trim, where the C library has it; it returns 0
// where it does not, or when nothing was handed back.
static int trim_heap(void) {
	int (*trim)(size_t) = (int (*)(size_t))dlsym(RTLD_DEFAULT, "malloc_trim");
	return trim ? trim(0) : 0;
}
*/
import "C"

// TrimHeap hands back to the operating system the memory that closed
// sessions left free in the C heap (glibc's malloc_trim; nothing where
// the C library lacks it). The allocator keeps what is freed for the
// process's next allocations: after a session made and closed to check
// another, tens of megabytes that the process would hold for good.
func TrimHeap() { C.trim_heap() }
