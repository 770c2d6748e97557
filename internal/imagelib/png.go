package imagelib

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// libpng 1.6's API, declared here so that building needs no headers.
typedef void *png_structp;
typedef void *png_infop;
typedef void (*png_error_fn)(png_structp, const char *);
typedef void (*png_rw_fn)(png_structp, unsigned char *, size_t);
typedef void (*png_longjmp_fn)(jmp_buf, int);

enum {
	COLOR_MASK_COLOR = 2,
	COLOR_TYPE_PALETTE = 3,
};

static void *png_lib;
static const char *(*p_get_libpng_ver)(png_structp);
static png_structp (*p_create_read_struct)(const char *, void *, png_error_fn, png_error_fn);
static png_infop (*p_create_info_struct)(png_structp);
static void (*p_destroy_read_struct)(png_structp *, png_infop *, png_infop *);
static jmp_buf *(*p_set_longjmp_fn)(png_structp, png_longjmp_fn, size_t);
static void (*p_longjmp)(png_structp, int);
static void *(*p_get_error_ptr)(png_structp);
static void (*p_set_read_fn)(png_structp, void *, png_rw_fn);
static void *(*p_get_io_ptr)(png_structp);
static void (*p_error)(png_structp, const char *);
static void (*p_read_info)(png_structp, png_infop);
static unsigned int (*p_get_image_width)(png_structp, png_infop);
static unsigned int (*p_get_image_height)(png_structp, png_infop);
static unsigned char (*p_get_color_type)(png_structp, png_infop);
static unsigned char (*p_get_bit_depth)(png_structp, png_infop);
static void (*p_set_strip_16)(png_structp);
static void (*p_set_strip_alpha)(png_structp);
static void (*p_set_palette_to_rgb)(png_structp);
static void (*p_set_expand_gray_1_2_4_to_8)(png_structp);
static void (*p_set_gray_to_rgb)(png_structp);
static int (*p_set_interlace_handling)(png_structp);
static void (*p_read_update_info)(png_structp, png_infop);
static size_t (*p_get_rowbytes)(png_structp, png_infop);
static void (*p_read_image)(png_structp, unsigned char **);
static void (*p_read_end)(png_structp, png_infop);

static int png_loaded(void) { return png_lib != NULL; }

void *dl_open(const char *path, void **fns[], const char *names[], size_t n, const char *lacks, const char **why);

static const char *png_open(const char *path) {
	void **fns[] = {
		(void **)&p_get_libpng_ver, (void **)&p_create_read_struct, (void **)&p_create_info_struct,
		(void **)&p_destroy_read_struct, (void **)&p_set_longjmp_fn, (void **)&p_longjmp,
		(void **)&p_get_error_ptr, (void **)&p_set_read_fn, (void **)&p_get_io_ptr, (void **)&p_error,
		(void **)&p_read_info, (void **)&p_get_image_width, (void **)&p_get_image_height,
		(void **)&p_get_color_type, (void **)&p_get_bit_depth, (void **)&p_set_strip_16,
		(void **)&p_set_strip_alpha, (void **)&p_set_palette_to_rgb, (void **)&p_set_expand_gray_1_2_4_to_8,
		(void **)&p_set_gray_to_rgb, (void **)&p_set_interlace_handling, (void **)&p_read_update_info,
		(void **)&p_get_rowbytes, (void **)&p_read_image, (void **)&p_read_end,
	};
	const char *names[] = {
		"png_get_libpng_ver", "png_create_read_struct", "png_create_info_struct",
		"png_destroy_read_struct", "png_set_longjmp_fn", "png_longjmp",
		"png_get_error_ptr", "png_set_read_fn", "png_get_io_ptr", "png_error",
		"png_read_info", "png_get_image_width", "png_get_image_height",
		"png_get_color_type", "png_get_bit_depth", "png_set_strip_16",
		"png_set_strip_alpha", "png_set_palette_to_rgb", "png_set_expand_gray_1_2_4_to_8",
		"png_set_gray_to_rgb", "png_set_interlace_handling", "png_read_update_info",
		"png_get_rowbytes", "png_read_image", "png_read_end",
	};
	const char *why = NULL;
	png_lib = dl_open(path, fns, names, sizeof(fns) / sizeof(fns[0]), "the library lacks libpng 1.6's API", &why);
	if (!png_lib) return why;
	const char *ver = p_get_libpng_ver(NULL);
	if (!ver || strncmp(ver, "1.6.", 4) != 0) {
		dlclose(png_lib);
		png_lib = NULL;
		return "the library is not libpng 1.6";
	}
	return NULL;
}

// png_job is one decode: the input, and the message of the error that
// ended it.
typedef struct {
	const unsigned char *data;
	size_t size, off;
	char *err;
	int errlen;
} png_job;

static void png_job_read(png_structp pp, unsigned char *out, size_t n) {
	png_job *j = p_get_io_ptr(pp);
	if (n > j->size - j->off) p_error(pp, "the data ends early");
	memcpy(out, j->data + j->off, n);
	j->off += n;
}

static void png_job_error(png_structp pp, const char *msg) {
	png_job *j = p_get_error_ptr(pp);
	snprintf(j->err, j->errlen, "%s", msg);
	p_longjmp(pp, 1);
}

static void png_job_warning(png_structp pp, const char *msg) {}

// png_decode decodes a w×h PNG into out (w*h*3 bytes) as 8-bit RGB with
// OpenCV's transforms for IMREAD_COLOR. It returns 0 on success and -1 on
// error, with the message copied into err.
static int png_decode(const unsigned char *data, size_t size, unsigned char *out,
                      int w, int h, char *err, int errlen) {
	png_job job = {data, size, 0, err, errlen};
	png_structp pp = p_create_read_struct(p_get_libpng_ver(NULL), &job, png_job_error, png_job_warning);
	if (!pp) { snprintf(err, errlen, "png_create_read_struct failed"); return -1; }
	png_infop ip = p_create_info_struct(pp);
	unsigned char **rows = malloc(sizeof(unsigned char *) * (size_t)h);
	if (!ip || !rows) {
		snprintf(err, errlen, "out of memory");
		free(rows);
		p_destroy_read_struct(&pp, ip ? &ip : NULL, NULL);
		return -1;
	}
	if (setjmp(*p_set_longjmp_fn(pp, longjmp, sizeof(jmp_buf)))) {
		free(rows);
		p_destroy_read_struct(&pp, &ip, NULL);
		return -1;
	}
	p_set_read_fn(pp, &job, png_job_read);
	p_read_info(pp, ip);
	if ((int)p_get_image_width(pp, ip) != w || (int)p_get_image_height(pp, ip) != h)
		p_error(pp, "the size differs from the inspected header");
	int color = p_get_color_type(pp, ip), depth = p_get_bit_depth(pp, ip);
	if (depth > 8) p_set_strip_16(pp);
	p_set_strip_alpha(pp);
	if (color == COLOR_TYPE_PALETTE) p_set_palette_to_rgb(pp);
	if (!(color & COLOR_MASK_COLOR) && depth < 8) p_set_expand_gray_1_2_4_to_8(pp);
	if (!(color & COLOR_MASK_COLOR)) p_set_gray_to_rgb(pp);
	p_set_interlace_handling(pp);
	p_read_update_info(pp, ip);
	if (p_get_rowbytes(pp, ip) != (size_t)w * 3) p_error(pp, "unexpected row layout after the transforms");
	for (int y = 0; y < h; y++) rows[y] = out + (size_t)y * w * 3;
	p_read_image(pp, rows);
	p_read_end(pp, NULL);
	free(rows);
	p_destroy_read_struct(&pp, &ip, NULL);
	return 0;
}
*/
import "C"

import (
	"errors"
	"log/slog"
	"unsafe"

	"yoloserve/internal/decode"
)

// DefaultPNGLibrary is the soname dlopen looks for (Debian's libpng16-16).
const DefaultPNGLibrary = "libpng16.so.16"

var libpng = library{name: "libpng"}

// PNG is a decode.PNGDecoder backed by libpng 1.6, the library OpenCV
// reads PNGs with. Its pixels are those of decode.GoPNG, in about half the
// time.
type PNG struct{}

// OpenPNG loads libpng (path, or DefaultPNGLibrary when empty) once per
// process and returns its decoder. It returns an error that names the
// library when it cannot be loaded or is not libpng 1.6.
func OpenPNG(path string) (PNG, error) {
	return PNG{}, libpng.open(path, DefaultPNGLibrary, func(p *C.char) *C.char { return C.png_open(p) })
}

// Name implements decode.PNGDecoder.
func (PNG) Name() string { return "libpng" }

// DecodePNG implements decode.PNGDecoder: RGB for every PNG colour type
// and bit depth, interlaced or not, with 16-bit samples cut to their high
// byte and alpha dropped, as OpenCV's IMREAD_COLOR does. It returns
// libpng's message when the data is truncated or corrupt.
func (PNG) DecodePNG(data []byte, h decode.Header, dst []byte) ([]byte, error) {
	if C.png_loaded() == 0 {
		return dst, errors.New("libpng: library not loaded")
	}
	if len(data) == 0 || h.Width <= 0 || h.Height <= 0 {
		return dst, errors.New("empty PNG")
	}
	dst = rgbBuffer(dst, h)
	var msg [256]C.char
	rc := C.png_decode((*C.uchar)(unsafe.Pointer(&data[0])), C.size_t(len(data)),
		(*C.uchar)(unsafe.Pointer(&dst[0])), C.int(h.Width), C.int(h.Height), &msg[0], C.int(len(msg)))
	if rc < 0 {
		return dst, errors.New(C.GoString(&msg[0]))
	}
	return dst, nil
}

// PNGOrFallback returns the worker's PNG decoder: libdeflate's path
// (DeflatePNG, with the library at deflatePath, DefaultDeflateLibrary
// when empty) in front of libpng's decoder (pngPath, DefaultPNGLibrary
// when empty). A library that does not load is left out with a warning:
// without libpng, Go's decoder takes its place, with the same pixels in
// about twice the time; without libdeflate, libpng decodes every PNG,
// photos in about 2.4 times as long.
func PNGOrFallback(pngPath, deflatePath string, log *slog.Logger) decode.PNGDecoder {
	var next decode.PNGDecoder = decode.GoPNG{}
	if lib, err := OpenPNG(pngPath); err != nil {
		log.Warn("libpng not available; decoding PNG with Go's image/png, which gives the same pixels in about twice the time (install libpng16-16 or set LIBPNG_LIB)", "error", err)
	} else {
		next = lib
	}
	dec, err := OpenDeflatePNG(deflatePath, next)
	if err != nil {
		log.Warn("libdeflate not available; PNG photos take about 2.4 times as long to decode, with the same pixels (install libdeflate0 or set LIBDEFLATE_LIB)", "error", err)
		return next
	}
	return dec
}
