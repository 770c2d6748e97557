package imagelib

/*
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

// libdeflate's API (stable since 1.0), declared here so that building
// needs no headers.
static void *deflate_lib;
static void *(*p_alloc_decompressor)(void);
static void (*p_free_decompressor)(void *);
static int (*p_zlib_decompress)(void *, const void *, size_t, void *, size_t, size_t *);
static uint32_t (*p_crc32)(uint32_t, const void *, size_t);

static int deflate_loaded(void) { return deflate_lib != NULL; }

void *dl_open(const char *path, void **fns[], const char *names[], size_t n, const char *lacks, const char **why);

static const char *deflate_open(const char *path) {
	void **fns[] = {(void **)&p_alloc_decompressor, (void **)&p_free_decompressor,
	                (void **)&p_zlib_decompress, (void **)&p_crc32};
	const char *names[] = {"libdeflate_alloc_decompressor", "libdeflate_free_decompressor",
	                       "libdeflate_zlib_decompress", "libdeflate_crc32"};
	const char *why = NULL;
	deflate_lib = dl_open(path, fns, names, sizeof(fns) / sizeof(fns[0]),
	                      "the library lacks libdeflate's decompression API", &why);
	return why;
}

static uint32_t be32(const unsigned char *p) {
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int chunk_crc_ok(const unsigned char *chunk, uint32_t n) {
	return p_crc32(0, chunk + 4, (size_t)n + 4) == be32(chunk + 8 + n);
}

#ifdef __SSE2__
// px_load reads 4 bytes at p: one pixel of 3 or 4 bytes (and, for 3,
// the next byte, which the buffers leave room for) as the low lanes of a
// vector.
static inline __m128i px_load(const unsigned char *p) {
	int32_t v;
	memcpy(&v, p, 4);
	return _mm_cvtsi32_si128(v);
}

// px_store writes the low bpp bytes of v at p.
static inline void px_store(unsigned char *p, __m128i v, size_t bpp) {
	int32_t x = _mm_cvtsi128_si32(v);
	memcpy(p, &x, bpp);
}

static inline __m128i abs_i16(__m128i x) { return _mm_max_epi16(x, _mm_sub_epi16(_mm_setzero_si128(), x)); }

static inline __m128i select_si128(__m128i mask, __m128i yes, __m128i no) {
	return _mm_or_si128(_mm_and_si128(mask, yes), _mm_andnot_si128(mask, no));
}

// unfilter_pixels reconstructs one row of n bytes, bpp (3 or 4) bytes a
// pixel, filtered with Sub (1), Average (3) or Paeth (4), whose bytes
// depend on the pixel before: a pixel at a time in SSE2 lanes, as
// libpng's SSE2 filters do. See png_unfilter for the arguments.
static inline void unfilter_pixels(int filter, unsigned char *cur, const unsigned char *raw,
                                 const unsigned char *prev, size_t n, size_t bpp) {
	const __m128i zero = _mm_setzero_si128();
	__m128i a = zero, b, c, d;
	size_t i;
	switch (filter) {
	case 1:
		for (i = 0; i < n; i += bpp) {
			a = _mm_add_epi8(a, px_load(raw + i));
			px_store(cur + i, a, bpp);
		}
		break;
	case 3:
		for (i = 0; i < n; i += bpp) {
			b = px_load(prev + i);
			// floor((a+b)/2): the rounded-up average, less the bit it rounded.
			__m128i avg = _mm_sub_epi8(_mm_avg_epu8(a, b), _mm_and_si128(_mm_xor_si128(a, b), _mm_set1_epi8(1)));
			a = _mm_add_epi8(px_load(raw + i), avg);
			px_store(cur + i, a, bpp);
		}
		break;
	case 4:
		b = zero;
		d = zero;
		for (i = 0; i < n; i += bpp) {
			// 16-bit lanes: a is the pixel to the left, b above, c above left.
			c = b;
			b = _mm_unpacklo_epi8(px_load(prev + i), zero);
			a = d;
			__m128i pa = _mm_sub_epi16(b, c), pb = _mm_sub_epi16(a, c);
			__m128i pc = abs_i16(_mm_add_epi16(pa, pb));
			pa = abs_i16(pa);
			pb = abs_i16(pb);
			__m128i least = _mm_min_epi16(pc, _mm_min_epi16(pa, pb));
			// Ties go to a, then b, as the specification says.
			__m128i nearest = select_si128(_mm_cmpeq_epi16(least, pa), a,
			                               select_si128(_mm_cmpeq_epi16(least, pb), b, c));
			// Adding bytes wraps each lane's low byte modulo 256 and
			// leaves its high byte zero.
			d = _mm_add_epi8(_mm_unpacklo_epi8(px_load(raw + i), zero), nearest);
			px_store(cur + i, _mm_packus_epi16(d, d), bpp);
		}
		break;
	}
}

#endif

// unfilter_bytes is unfilter_pixels a byte at a time, for any bpp: for
// gray pixels, and for all where SSE2 is missing.
static inline void unfilter_bytes(int filter, unsigned char *cur, const unsigned char *raw,
                                  const unsigned char *prev, size_t n, size_t bpp) {
	size_t i;
	switch (filter) {
	case 1:
		memcpy(cur, raw, bpp);
		for (i = bpp; i < n; i++) cur[i] = raw[i] + cur[i - bpp];
		break;
	case 3:
		for (i = 0; i < bpp; i++) cur[i] = raw[i] + (prev[i] >> 1);
		for (; i < n; i++) cur[i] = raw[i] + ((cur[i - bpp] + prev[i]) >> 1);
		break;
	case 4:
		for (i = 0; i < bpp; i++) cur[i] = raw[i] + prev[i];
		for (; i < n; i++) {
			int a = cur[i - bpp], b = prev[i], c = prev[i - bpp];
			int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
			cur[i] = raw[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
		}
		break;
	}
}

// png_unfilter reconstructs one row of n bytes, bpp (1 to 4) bytes a
// pixel, from its filtered bytes raw and the reconstructed row above,
// prev (zeros for the first row), into cur, with the PNG specification's
// filters. raw and prev may be read one byte past n.
static inline void png_unfilter(int filter, unsigned char *cur, const unsigned char *raw,
                                const unsigned char *prev, size_t n, size_t bpp) {
	switch (filter) {
	case 0:
		memcpy(cur, raw, n);
		break;
	case 2:
		for (size_t i = 0; i < n; i++) cur[i] = raw[i] + prev[i];
		break;
	default:
#ifdef __SSE2__
		if (bpp >= 3) {
			unfilter_pixels(filter, cur, raw, prev, n, bpp);
			break;
		}
#endif
		unfilter_bytes(filter, cur, raw, prev, n, bpp);
	}
}

enum { FAST_DONE = 0, FAST_PASS = 1 };

// libpng's limits that a file could meet where this path would not:
// its default user limits on the size, and on any chunk's length (raised
// for IDAT to what the image could need, as png_check_chunk_length does).
enum { PNG_SIZE_MAX = 1000000, PNG_CHUNK_MAX = 8000000 };

// png_fast_decode decodes a non-interlaced 8-bit gray, RGB, gray and
// alpha, or RGBA PNG of w×h into out (w*h*3 bytes, gray replicated, alpha
// dropped, as libpng's transforms for IMREAD_COLOR give them): every IDAT chunk's checksum is
// checked, the joined zlib stream inflated by libdeflate (which checks its
// Adler-32) to exactly the image's filtered rows, and the rows unfiltered
// into out. It returns FAST_DONE, or FAST_PASS, having written nothing a
// caller may read, for anything else: another kind of PNG, any chunk
// libpng would stop at or treat in a way this path does not (a bad
// checksum on a critical chunk, PLTE, an unknown critical chunk, IDATs
// apart, a chunk past libpng's limits, a missing IEND), data libdeflate
// rejects, or no memory. libpng then decodes it, or gives its error.
static int png_fast_decode(const unsigned char *data, size_t size, unsigned char *out, int w, int h) {
	if (size < 8 + 25 || w <= 0 || h <= 0 || w > PNG_SIZE_MAX || h > PNG_SIZE_MAX) return FAST_PASS;
	const unsigned char *ihdr = data + 8;
	if (be32(ihdr) != 13 || memcmp(ihdr + 4, "IHDR", 4) != 0 || !chunk_crc_ok(ihdr, 13)) return FAST_PASS;
	if (be32(ihdr + 8) != (uint32_t)w || be32(ihdr + 12) != (uint32_t)h) return FAST_PASS;
	int depth = ihdr[16], color = ihdr[17];
	if (depth != 8 || color == 3 || ihdr[18] || ihdr[19] || ihdr[20]) return FAST_PASS;
	// Gray, RGB, gray and alpha, RGBA: 1, 3, 2 and 4 bytes a pixel.
	size_t bpp = color == 0 ? 1 : color == 2 ? 3 : color == 4 ? 2 : 4, rowbytes = (size_t)w * bpp, total = (size_t)h * (rowbytes + 1);
	size_t idat_max = total + 6 + 5 * (total / (rowbytes + 1 > 32566 ? 32566 : rowbytes + 1) + 1);
	if (idat_max < PNG_CHUNK_MAX) idat_max = PNG_CHUNK_MAX;

	size_t pos = 8 + 25, idat_len = 0, first_idat = 0, idat_chunks = 0;
	int state = 0; // 0 before the IDATs, 1 among them, 2 after them
	for (;;) {
		if (size - pos < 12) return FAST_PASS;
		uint32_t n = be32(data + pos);
		const unsigned char *type = data + pos + 4;
		if (n > size - pos - 12) return FAST_PASS;
		for (int i = 0; i < 4; i++) {
			unsigned char c = type[i] | 0x20;
			if (c < 'a' || c > 'z') return FAST_PASS;
		}
		if (memcmp(type, "IDAT", 4) == 0) {
			if (state == 2 || n > idat_max || !chunk_crc_ok(data + pos, n)) return FAST_PASS;
			if (state == 0) first_idat = pos;
			state = 1;
			idat_len += n;
			idat_chunks++;
		} else {
			if (state == 1) state = 2;
			if (memcmp(type, "IEND", 4) == 0) {
				if (n != 0 || state != 2 || !chunk_crc_ok(data + pos, 0)) return FAST_PASS;
				break;
			}
			if (!(type[0] & 0x20) || n > PNG_CHUNK_MAX) return FAST_PASS; // critical (PLTE, IHDR again, unknown), or large
		}
		pos += 12 + (size_t)n;
	}

	unsigned char *joined = NULL;
	const unsigned char *in = data + first_idat + 8;
	if (idat_chunks > 1) {
		joined = malloc(idat_len ? idat_len : 1);
		if (!joined) return FAST_PASS;
		size_t at = 0;
		for (pos = first_idat; at < idat_len; pos += 12 + (size_t)be32(data + pos)) {
			uint32_t n = be32(data + pos);
			memcpy(joined + at, data + pos + 8, n);
			at += n;
		}
		in = joined;
	}
	// One byte more than the rows, which png_unfilter may read.
	unsigned char *filtered = malloc(total + 1);
	unsigned char *rows = calloc(bpp == 3 ? 1 : 2, rowbytes + 1);
	void *dec = p_alloc_decompressor();
	int rc = -1;
	if (filtered && rows && dec) rc = p_zlib_decompress(dec, in, idat_len, filtered, total, NULL);
	if (dec) p_free_decompressor(dec);
	free(joined);
	for (int y = 0; rc == 0 && y < h; y++) {
		const unsigned char *raw = filtered + (size_t)y * (rowbytes + 1);
		if (raw[0] > 4) rc = -1;
	}
	if (rc != 0) {
		free(filtered);
		free(rows);
		return FAST_PASS;
	}
	size_t outrow = (size_t)w * 3;
	if (bpp == 3) {
		const unsigned char *prev = rows; // zeros above the first row
		for (int y = 0; y < h; y++) {
			const unsigned char *raw = filtered + (size_t)y * (rowbytes + 1);
			unsigned char *cur = out + (size_t)y * outrow;
			png_unfilter(raw[0], cur, raw + 1, prev, rowbytes, 3);
			prev = cur; // followed by the next row, so it too can be read a byte past its end
		}
	} else {
		unsigned char *prev = rows, *cur = rows + rowbytes;
		for (int y = 0; y < h; y++) {
			const unsigned char *raw = filtered + (size_t)y * (rowbytes + 1);
			png_unfilter(raw[0], cur, raw + 1, prev, rowbytes, bpp);
			unsigned char *o = out + (size_t)y * outrow;
			if (bpp == 4) {
				for (int x = 0; x < w; x++) {
					o[3 * x] = cur[4 * x];
					o[3 * x + 1] = cur[4 * x + 1];
					o[3 * x + 2] = cur[4 * x + 2];
				}
			} else { // gray, replicated, its alpha (bpp 2) dropped
				for (int x = 0; x < w; x++) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = cur[bpp * x];
			}
			unsigned char *t = prev;
			prev = cur;
			cur = t;
		}
	}
	free(filtered);
	free(rows);
	return FAST_DONE;
}
*/
import "C"

import (
	"errors"
	"unsafe"

	"yoloserve/internal/decode"
)

// DefaultDeflateLibrary is the soname dlopen looks for (Debian's
// libdeflate0).
const DefaultDeflateLibrary = "libdeflate.so.0"

var libdeflate = library{name: "libdeflate"}

// DeflatePNG is a decode.PNGDecoder for the PNGs photos are saved as
// (8-bit gray, RGB or RGBA, with or without alpha, not interlaced; no
// palette): it inflates their pixels with
// libdeflate, about 2.7 times as fast as zlib, which libpng uses, and
// unfilters them itself. Every other PNG, and any this path would read
// differently from libpng, goes to Next, so its pixels and its errors are
// Next's.
type DeflatePNG struct {
	Next decode.PNGDecoder
}

// OpenDeflatePNG loads libdeflate (path, or DefaultDeflateLibrary when
// empty) once per process and returns a decoder that passes what it does
// not decode to next. It returns an error that names the library when it
// cannot be loaded or lacks the functions used.
func OpenDeflatePNG(path string, next decode.PNGDecoder) (DeflatePNG, error) {
	if next == nil {
		return DeflatePNG{}, errors.New("libdeflate: no PNG decoder to pass other PNGs to")
	}
	return DeflatePNG{Next: next}, libdeflate.open(path, DefaultDeflateLibrary, func(p *C.char) *C.char { return C.deflate_open(p) })
}

// Name implements decode.PNGDecoder: "libdeflate+" and Next's name.
func (d DeflatePNG) Name() string { return "libdeflate+" + d.Next.Name() }

// DecodePNG implements decode.PNGDecoder. It returns Next's error for a
// PNG that cannot be decoded.
func (d DeflatePNG) DecodePNG(data []byte, h decode.Header, dst []byte) ([]byte, error) {
	if C.deflate_loaded() == 0 {
		return dst, errors.New("libdeflate: library not loaded")
	}
	if len(data) > 0 && h.Width > 0 && h.Height > 0 {
		dst = rgbBuffer(dst, h)
		if C.png_fast_decode((*C.uchar)(unsafe.Pointer(&data[0])), C.size_t(len(data)),
			(*C.uchar)(unsafe.Pointer(&dst[0])), C.int(h.Width), C.int(h.Height)) == C.FAST_DONE {
			return dst, nil
		}
	}
	return d.Next.DecodePNG(data, h, dst)
}
