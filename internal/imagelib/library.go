package imagelib

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

// dl_open opens the library at path and resolves names[i] into *fns[i],
// n of them, for the other files' *_open functions, which declare it. It
// returns the library's handle, or NULL with *why set to dlerror's
// message, or to lacks when a name is missing (the library then closed
// again).
void *dl_open(const char *path, void **fns[], const char *names[], size_t n, const char *lacks, const char **why) {
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		*why = dlerror();
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		*fns[i] = dlsym(lib, names[i]);
		if (!*fns[i]) {
			dlclose(lib);
			*why = lacks;
			return NULL;
		}
	}
	return lib;
}
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"

	"yoloserve/internal/decode"
)

// library is a C library opened with dlopen once per process.
type library struct {
	name string // for errors: "turbojpeg", "libpng"
	once sync.Once
	err  error
}

// open loads the library from path, or from def when path is empty, on
// the first call, with load: the C function that dlopens it and resolves
// its symbols, returning NULL or why it could not. It returns, on every
// call, the first call's error, which names the file.
func (l *library) open(path, def string, load func(*C.char) *C.char) error {
	if path == "" {
		path = def
	}
	l.once.Do(func() {
		cpath := C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
		if msg := load(cpath); msg != nil {
			l.err = fmt.Errorf("%s: cannot load %s: %s", l.name, path, C.GoString(msg))
		}
	})
	return l.err
}

// rgbBuffer returns dst resized to hold h's stored pixels as RGB, reusing
// its storage when it is large enough.
func rgbBuffer(dst []byte, h decode.Header) []byte {
	n := h.Width * h.Height * 3
	if cap(dst) < n {
		return make([]byte, n)
	}
	return dst[:n]
}
