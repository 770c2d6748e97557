package imagelib

// #include <stdlib.h>
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
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
