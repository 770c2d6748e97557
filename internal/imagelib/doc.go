// Package imagelib decodes images with the C libraries OpenCV uses:
// libjpeg-turbo through its TurboJPEG API (jpeg.go) and libpng (png.go),
// with libdeflate in front of libpng for the PNGs photos are saved as
// (deflate.go).
// Each library is opened at run time with dlopen, so building needs no
// headers and a machine without one falls back to Go's decoder for that
// format. jpeg.go also keeps a thread bound to each CPU, on which a lone
// JPEG's strips are decoded beside the caller's (decode.StripDecoder). All
// of the project's own cgo lives here.
package imagelib
