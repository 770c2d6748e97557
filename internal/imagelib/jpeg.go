package imagelib

/*
#cgo LDFLAGS: -lpthread
#define _GNU_SOURCE
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

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

void *dl_open(const char *path, void **fns[], const char *names[], size_t n, const char *lacks, const char **why);

static const char *tj_open(const char *path) {
	void **fns[] = {(void **)&p_init, (void **)&p_header, (void **)&p_decompress, (void **)&p_destroy,
	                (void **)&p_errstr, (void **)&p_errcode, (void **)&p_init_compress, (void **)&p_compress,
	                (void **)&p_free};
	const char *names[] = {"tjInitDecompress", "tjDecompressHeader3", "tjDecompress2", "tjDestroy",
	                       "tjGetErrorStr2", "tjGetErrorCode", "tjInitCompress", "tjCompress2", "tjFree"};
	const char *why = NULL;
	tj_lib = dl_open(path, fns, names, sizeof(fns) / sizeof(fns[0]), "the library lacks the TurboJPEG 2 API", &why);
	return why;
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

// A strip of a JPEG, decoded by tj_decode_strips: rc and err as tj_decode
// leaves them.
typedef struct {
	const unsigned char *jpeg;
	unsigned long size;
	unsigned char *buf;
	int w, h, pf, flags, rc;
	char err[256];
} tj_strip;

static void tj_run(tj_strip *s) {
	s->rc = tj_decode(s->jpeg, s->size, s->buf, s->w, s->h, s->pf, s->flags, s->err, sizeof s->err);
}

// A helper is a thread bound to one CPU that decodes a strip for a caller
// on another CPU. The kernel wakes a thread where its waker runs when it
// may (this machine's packs woken threads onto busy virtual CPUs), and a
// strip woken there waits for the caller's own strip; a thread bound to
// another CPU is run there. The caller posts a strip to an idle helper,
// and takes it back if the helper has not begun it by the time the
// caller's own strips are done.
enum { H_IDLE, H_RESERVED, H_POSTED, H_TAKEN, H_DONE, H_CLAIMED };

typedef struct {
	_Atomic int state;
	tj_strip *strip; // set while H_RESERVED, read once H_POSTED
	int cpu;
} tj_helper;

#define TJ_MAX_HELPERS 256
static tj_helper tj_helpers[TJ_MAX_HELPERS];
static int tj_nhelpers;
static pthread_once_t tj_helpers_once = PTHREAD_ONCE_INIT;

static void tj_wait(_Atomic int *a, int v) { syscall(SYS_futex, a, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0); }
static void tj_wake(_Atomic int *a) { syscall(SYS_futex, a, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0); }

static void *tj_helper_loop(void *arg) {
	tj_helper *hp = arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL); // signals are Go's threads' to take
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(hp->cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof set, &set); // unbound, it still helps
	// A helper waits under SCHED_IDLE, so that it starts a strip only on a
	// CPU nothing else wants (another process's inference keeps it off,
	// and the caller then decodes the strip itself), and decodes under the
	// policy it was started with, so that it is not starved half-way.
	struct sched_param prio = {0};
	int policy = sched_getscheduler(0);
	int idle = sched_setscheduler(0, SCHED_IDLE, &prio) == 0;
	for (;;) {
		int s = atomic_load(&hp->state);
		int want = H_POSTED;
		if (s == H_POSTED && atomic_compare_exchange_strong(&hp->state, &want, H_TAKEN)) {
			if (idle) sched_setscheduler(0, policy, &prio);
			tj_run(hp->strip);
			atomic_store(&hp->state, H_DONE);
			tj_wake(&hp->state);
			if (idle) sched_setscheduler(0, SCHED_IDLE, &prio);
			continue;
		}
		if (s != H_POSTED) tj_wait(&hp->state, s);
	}
	return NULL;
}

// tj_start_helpers starts a helper on each CPU the process may run on. The
// helpers live as long as the process, asleep when there is nothing to do.
static void tj_start_helpers(void) {
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) != 0) return;
	for (int c = 0; c < CPU_SETSIZE && tj_nhelpers < TJ_MAX_HELPERS; c++) {
		if (!CPU_ISSET(c, &set)) continue;
		tj_helper *hp = &tj_helpers[tj_nhelpers];
		hp->cpu = c;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_t th;
		int rc = pthread_create(&th, &attr, tj_helper_loop, hp);
		pthread_attr_destroy(&attr);
		if (rc != 0) break;
		tj_nhelpers++;
	}
}

// tj_decode_strips decodes n strips: the first on the calling thread, the
// others each on an idle helper bound to another CPU while there are any,
// and the rest, with any a helper has not begun, on the calling thread.
// It returns the number of strips helpers decoded.
static int tj_decode_strips(tj_strip *strips, int n) {
	pthread_once(&tj_helpers_once, tj_start_helpers);
	tj_helper *posted[TJ_MAX_HELPERS + 1]; // by strip, from 1
	int cpu = sched_getcpu(), next = 1;
	for (int i = 0; i < tj_nhelpers && next < n; i++) {
		tj_helper *hp = &tj_helpers[i];
		int want = H_IDLE;
		if (hp->cpu == cpu || !atomic_compare_exchange_strong(&hp->state, &want, H_RESERVED)) continue;
		hp->strip = &strips[next];
		atomic_store(&hp->state, H_POSTED);
		tj_wake(&hp->state);
		posted[next++] = hp;
	}
	tj_run(&strips[0]);
	for (int i = next; i < n; i++) tj_run(&strips[i]);
	int helped = 0;
	for (int i = 1; i < next; i++) {
		tj_helper *hp = posted[i];
		int want = H_POSTED;
		if (atomic_compare_exchange_strong(&hp->state, &want, H_CLAIMED)) {
			tj_run(&strips[i]);
		} else {
			int s;
			while ((s = atomic_load(&hp->state)) == H_TAKEN) tj_wait(&hp->state, s);
			helped++;
		}
		atomic_store(&hp->state, H_IDLE);
	}
	return helped;
}
*/
import "C"

import (
	"errors"
	"log/slog"
	"runtime"
	"sync/atomic"
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

// helpedStrips counts the strips DecodeJPEGStrips had decoded by helpers.
var helpedStrips atomic.Int64

// DecodeJPEGStrips implements decode.StripDecoder. The first strip is
// decoded on the calling thread and each other one, while there are idle
// ones, on a thread of this package's bound to another CPU than the
// caller's (one per CPU, started at the first call), which takes it only
// if nothing else wants that CPU; a strip such a thread has not begun by
// the time the caller's are done, the caller decodes too. It declines
// CMYK and YCCK JPEGs, whose pixels are converted after decoding, and
// strips whose Dst is short.
func (JPEG) DecodeJPEGStrips(strips []decode.Strip) bool {
	if C.tj_loaded() == 0 || len(strips) < 2 {
		return false
	}
	for _, s := range strips {
		if s.Header.Components == 4 || len(s.Data) == 0 || len(s.Dst) < 3*s.Header.Width*s.Header.Height {
			return false
		}
	}
	var pin runtime.Pinner // the C strips hold the Go buffers' addresses
	defer pin.Unpin()
	cs := make([]C.tj_strip, len(strips))
	for i, s := range strips {
		pin.Pin(&s.Data[0])
		pin.Pin(&s.Dst[0])
		cs[i] = C.tj_strip{
			jpeg: (*C.uchar)(unsafe.Pointer(&s.Data[0])), size: C.ulong(len(s.Data)),
			buf: (*C.uchar)(unsafe.Pointer(&s.Dst[0])), w: C.int(s.Header.Width), h: C.int(s.Header.Height),
			pf: PixelRGB, flags: flagAccurateDCT,
		}
	}
	helpedStrips.Add(int64(C.tj_decode_strips(&cs[0], C.int(len(cs)))))
	for i := range strips {
		strips[i].Err = nil
		if cs[i].rc < 0 {
			strips[i].Err = errors.New(C.GoString(&cs[i].err[0]))
		}
	}
	return true
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
