package onnx

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

static void *cudart_lib;
static int (*p_host_alloc)(void **, size_t, unsigned int);
static int (*p_free_host)(void *);
static const char *(*p_error_string)(int);

// cudart_open loads the CUDA runtime from path. It returns NULL, or why
// it could not.
static const char *cudart_open(const char *path) {
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!lib) return dlerror();
	p_host_alloc = dlsym(lib, "cudaHostAlloc");
	p_free_host = dlsym(lib, "cudaFreeHost");
	p_error_string = dlsym(lib, "cudaGetErrorString");
	if (!p_host_alloc || !p_free_host || !p_error_string) {
		dlclose(lib);
		return "the library lacks cudaHostAlloc, cudaFreeHost or cudaGetErrorString";
	}
	cudart_lib = lib;
	return NULL;
}

// cudart_host_alloc allocates n bytes of page-locked memory, pinned for
// every CUDA context (cudaHostAllocPortable). It returns cudaError_t.
static int cudart_host_alloc(void **p, size_t n) { return p_host_alloc(p, n, 1); }
static int cudart_free_host(void *p) { return p_free_host(p); }
static const char *cudart_error(int e) { return p_error_string(e); }
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// CUDARuntime is the soname of the CUDA runtime the CUDA provider of
// `make build ORT_FLAVOR=cuda` links (CUDA 13); once the provider is
// loaded, dlopen finds that same library in the process.
const CUDARuntime = "libcudart.so.13"

// cudaRuntime is the CUDA runtime, loaded once per process for page-locked
// memory.
var cudaRuntime struct {
	once sync.Once
	err  error
}

// openCUDARuntime loads the CUDA runtime on the first call. It returns,
// on every call, the first call's error, which names the file.
func openCUDARuntime() error {
	cudaRuntime.once.Do(func() { cudaRuntime.err = loadCUDARuntime(CUDARuntime) })
	return cudaRuntime.err
}

// loadCUDARuntime loads the CUDA runtime from path. It returns an error
// naming path when it cannot.
func loadCUDARuntime(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	if msg := C.cudart_open(cpath); msg != nil {
		return fmt.Errorf("onnx: cannot load the CUDA runtime %s: %s", path, C.GoString(msg))
	}
	return nil
}

// pinnedFloats returns n float32s of page-locked host memory, which a
// GPU copies to and from directly where ordinary (pageable) memory goes
// through the driver's staging buffer, and the pointer freePinned takes.
// It returns the CUDA runtime's error when it cannot allocate them; the
// runtime must be loaded.
func pinnedFloats(n int) ([]float32, unsafe.Pointer, error) {
	var p unsafe.Pointer
	if e := C.cudart_host_alloc(&p, C.size_t(n)*4); e != 0 {
		return nil, nil, fmt.Errorf("onnx: cudaHostAlloc of %d bytes: %s", n*4, C.GoString(C.cudart_error(e)))
	}
	return unsafe.Slice((*float32)(p), n), p, nil
}

// freePinned frees memory pinnedFloats returned.
func freePinned(p unsafe.Pointer) { C.cudart_free_host(p) }
