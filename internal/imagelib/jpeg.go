package imagelib

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef void *tjhandle;

static void *tj_lib;
static tjhandle (*p_init)(void);
static int (*p_header)(tjhandle, const unsigned char *, unsigned long, int *, int *, int *, int *);
static int (*p_decompress)(tjhandle, const unsigned char *, unsigned long, unsigned char *, int, int, int, int, int);
static int (*p_destroy)(tjhandle);
static char *(*p_errstr)(tjhandle);
static int (*p_errcode)(tjhandle);
static tjhandle (*p_init_compress)(void);
static int (*p_compress)(tjhandle, const unsigned char *, int, int, int, int, unsigned char **, unsigned long *, int, int, int);
static void (*p_free)(unsigned char *);

static int tj_loaded(void) { return tj_lib != NULL; }

static const char *tj_open(const char *path) {
	tj_lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!tj_lib) return dlerror();
	p_init = dlsym(tj_lib, "tjInitDecompress");
	p_header = dlsym(tj_lib, "tjDecompressHeader3");
	p_decompress = dlsym(tj_lib, "tjDecompress2");
	p_destroy = dlsym(tj_lib, "tjDestroy");
	p_errstr = dlsym(tj_lib, "tjGetErrorStr2");
	p_errcode = dlsym(tj_lib, "tjGetErrorCode");
	p_init_compress = dlsym(tj_lib, "tjInitCompress");
	p_compress = dlsym(tj_lib, "tjCompress2");
	p_free = dlsym(tj_lib, "tjFree");
	if (!p_init || !p_header || !p_decompress || !p_destroy || !p_errstr || !p_errcode ||
	    !p_init_compress || !p_compress || !p_free) {
		dlclose(tj_lib);
		tj_lib = NULL;
		return "the library lacks the TurboJPEG 2 API";
	}
	return NULL;
}

// tj_decode decodes into buf (w*h*ncomp bytes). It returns 0 on success, 1
// when libjpeg only warned (the image is decoded, as OpenCV takes it) and -1
// on error, with the message copied into err.
static int tj_decode(const unsigned char *jpeg, unsigned long size, unsigned char *buf,
                     int w, int h, int pf, int flags, char *err, int errlen) {
	tjhandle t = p_init();
	if (!t) { snprintf(err, errlen, "tjInitDecompress failed"); return -1; }
	int rc = p_decompress(t, jpeg, size, buf, w, 0, h, pf, flags);
	if (rc != 0) {
		if (p_errcode(t) == 0) { p_destroy(t); return 1; } // TJERR_WARNING
		snprintf(err, errlen, "%s", p_errstr(t));
	}
	p_destroy(t);
	return rc == 0 ? 0 : -1;
}

// tj_encode compresses pixels into a JPEG that the caller frees with
// tj_free. It returns NULL on error, with the message copied into err.
static unsigned char *tj_encode(const unsigned char *pix, int w, int h, int pf, int subsamp,
                                int quality, int flags, unsigned long *size, char *err, int errlen) {
	tjhandle t = p_init_compress();
	if (!t) { snprintf(err, errlen, "tjInitCompress failed"); return NULL; }
	unsigned char *out = NULL;
	*size = 0;
	if (p_compress(t, pix, w, 0, h, pf, &out, size, subsamp, quality, flags) != 0) {
		snprintf(err, errlen, "%s", p_errstr(t));
		if (out) p_free(out);
		out = NULL;
	}
	p_destroy(t);
	return out;
}

static void tj_free(unsigned char *p) { p_free(p); }
*/
import "C"

import (
	"errors"
	"log/slog"
	"unsafe"

	"yoloserve/internal/decode"
)

// DefaultJPEGLibrary is the soname dlopen looks for (Debian's
// libturbojpeg0).
const DefaultJPEGLibrary = "libturbojpeg.so.0"

// Pixel formats (TJPF_*), which decoding uses too, and chroma subsampling
// for Encode (TurboJPEG's values).
const (
	PixelRGB    = 0
	PixelGray   = 6
	PixelCMYK   = 11
	Subsamp444  = 0
	Subsamp422  = 1
	Subsamp420  = 2
	SubsampGray = 3
	Subsamp440  = 4
	Subsamp411  = 5
)

const flagAccurateDCT = 4096 // TJFLAG_ACCURATEDCT: libjpeg's JDCT_ISLOW, OpenCV's default

var turbojpeg = library{name: "turbojpeg"}

// JPEG is a decode.JPEGDecoder backed by libjpeg-turbo.
type JPEG struct{}

// OpenJPEG loads libjpeg-turbo (path, or DefaultJPEGLibrary when empty)
// once per process and returns its decoder. It returns an error that names
// the library when it cannot be loaded.
func OpenJPEG(path string) (JPEG, error) {
	return JPEG{}, turbojpeg.open(path, DefaultJPEGLibrary, func(p *C.char) *C.char { return C.tj_open(p) })
}

// Name implements decode.JPEGDecoder.
func (JPEG) Name() string { return "libjpeg-turbo" }

// DecodeJPEG implements decode.JPEGDecoder: RGB for gray and colour JPEGs,
// and for CMYK/YCCK the raw 4-channel decode converted with OpenCV's formula.
func (JPEG) DecodeJPEG(data []byte, h decode.Header, dst []byte) ([]byte, error) {
	if C.tj_loaded() == 0 {
		return dst, errors.New("turbojpeg: library not loaded")
	}
	if len(data) == 0 {
		return dst, errors.New("empty JPEG")
	}
	dst = rgbBuffer(dst, h)
	buf, pf := dst, C.int(PixelRGB)
	if h.Components == 4 {
		buf, pf = make([]byte, h.Width*h.Height*4), PixelCMYK
	}
	var msg [256]C.char
	rc := C.tj_decode((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)),
		(*C.uchar)(unsafe.Pointer(&buf[0])), C.int(h.Width), C.int(h.Height), pf,
		flagAccurateDCT, &msg[0], C.int(len(msg)))
	if rc < 0 {
		return dst, errors.New(C.GoString(&msg[0]))
	}
	if h.Components == 4 {
		decode.CMYKToRGB(buf, dst)
	}
	return dst, nil
}

// JPEGOrFallback returns libjpeg-turbo's decoder when the library at path
// (DefaultJPEGLibrary when empty) loads, and otherwise logs a warning and
// returns Go's decoder, whose output differs slightly from OpenCV's.
func JPEGOrFallback(path string, log *slog.Logger) decode.JPEGDecoder {
	dec, err := OpenJPEG(path)
	if err != nil {
		log.Warn("libjpeg-turbo not available; decoding JPEG with Go's image/jpeg, whose confidences can differ from Ultralytics' by a few hundredths (install libturbojpeg0 or set TURBOJPEG_LIB)", "error", err)
		return decode.GoJPEG{}
	}
	return dec
}

// EncodeJPEG compresses w×h pixels of format pf (PixelRGB, PixelGray or
// PixelCMYK, which makes a YCCK JPEG) with the given subsampling and
// quality, progressive when asked. Tests use it to make the JPEG variants
// that Go's encoder cannot. It returns an error when the library is not
// loaded or refuses the input.
func EncodeJPEG(pix []byte, w, h, pf, subsamp, quality int, progressive bool) ([]byte, error) {
	if C.tj_loaded() == 0 {
		return nil, errors.New("turbojpeg: library not loaded")
	}
	flags := C.int(flagAccurateDCT)
	if progressive {
		flags |= 16384 // TJFLAG_PROGRESSIVE
	}
	var size C.ulong
	var msg [256]C.char
	out := C.tj_encode((*C.uchar)(unsafe.Pointer(&pix[0])), C.int(w), C.int(h), C.int(pf), C.int(subsamp),
		C.int(quality), flags, &size, &msg[0], C.int(len(msg)))
	if out == nil {
		return nil, errors.New(C.GoString(&msg[0]))
	}
	defer C.tj_free(out)
	return C.GoBytes(unsafe.Pointer(out), C.int(size)), nil
}
