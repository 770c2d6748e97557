package imagelib

// #include <stdlib.h>
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
