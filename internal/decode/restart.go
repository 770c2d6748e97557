package decode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
)

// A baseline JPEG with restart markers can be cut at a marker into pieces
// that decode on their own: the coder starts afresh after each marker.
// Cameras and phones write one at the start of every row of MCUs (bus.jpg
// from an iPhone, the Canon and Pentax photos), so a lone image can be
// decoded on several cores, where Huffman decoding, which takes most of a
// decode, cannot otherwise be shared out.
//
// Each strip is a JPEG of its own: the image's tables, a frame of the
// strip's height and its share of the entropy-coded data, its markers
// renumbered from RST0. For the pixels to come out as the whole image's,
// a strip decodes one MCU row more above and below the rows it keeps:
// libjpeg's fancy upsampling of chroma reads the chroma rows on either
// side, and at a frame's edge it repeats the edge row instead.

// decodeStrips decodes data, a JPEG whose header is h, with dec in up to
// cores strips side by side, into img.Pix (resized as needed). It returns
// false, with nothing decoded, when the JPEG cannot be cut (see
// splitJPEG) or a strip fails: the caller then decodes it whole, which
// reports the fault. A StripDecoder spreads the strips over the cores
// itself; with another decoder each strip but the first gets a goroutine.
//
// Strip i is decoded 2i MCU rows further down the buffer than its place
// in the image, so that the strips' margins fall between their kept rows
// and no two strips write the same memory; the kept rows are then moved
// up into place.
func decodeStrips(dec JPEGDecoder, data []byte, h Header, cores int, img *Image) bool {
	strips, mcuH := splitJPEG(data, h, cores, img.strips)
	if strips == nil {
		return false
	}
	img.strips = img.strips[:0]
	for _, s := range strips {
		img.strips = append(img.strips, s.data)
	}
	pitch := 3 * h.Width
	gap := 2 * mcuH // the margins between two strips
	if need := pitch * (h.Height + (len(strips)-1)*gap); cap(img.Pix) < need {
		img.Pix = make([]byte, need)
	}
	buf := img.Pix[:cap(img.Pix)]
	jobs := make([]Strip, len(strips))
	for i, s := range strips {
		sh := Header{Format: JPEG, Width: h.Width, Height: s.bottom - s.top, Components: h.Components, Orientation: 1}
		at := (s.top + i*gap) * pitch
		jobs[i] = Strip{Data: s.data, Header: sh, Dst: buf[at : at+pitch*sh.Height]}
	}
	if sd, ok := dec.(StripDecoder); !ok || !sd.DecodeJPEGStrips(jobs) {
		decodeEach(dec, jobs)
	}
	for _, j := range jobs {
		if j.Err != nil {
			return false
		}
	}
	for i := 1; i < len(strips); i++ {
		s := strips[i]
		copy(buf[s.keep*pitch:], buf[(s.keep+i*gap)*pitch:(s.end+i*gap)*pitch])
	}
	img.Pix = buf[:pitch*h.Height]
	return true
}

// A Strip is one piece of a JPEG cut at restart markers: a JPEG of its own.
type Strip struct {
	Data   []byte
	Header Header
	// Dst is where its pixels go, len(Dst) bytes, the strip's RGB rows.
	Dst []byte
	// Err is what decoding it met; nil when its pixels are in Dst.
	Err error
}

// A StripDecoder is a JPEGDecoder that decodes a JPEG's strips side by
// side itself, the way it best spreads them over the cores.
type StripDecoder interface {
	JPEGDecoder
	// DecodeJPEGStrips decodes each strip into its Dst, the first on the
	// calling goroutine, and sets its Err. It returns false, having
	// decoded none, when it does not take these strips; the caller then
	// decodes them itself.
	DecodeJPEGStrips(strips []Strip) bool
}

// decodeEach decodes the strips with dec, the first on the calling
// goroutine and each other on a goroutine of its own, and sets their Err,
// also when the decoder put the pixels elsewhere than Dst.
func decodeEach(dec JPEGDecoder, strips []Strip) {
	run := func(s *Strip) {
		out, err := dec.DecodeJPEG(s.Data, s.Header, s.Dst)
		if err == nil && (len(out) != len(s.Dst) || &out[0] != &s.Dst[0]) {
			err = errors.New("decode: the strip's pixels were not written in place")
		}
		s.Err = err
	}
	var wg sync.WaitGroup
	for i := 1; i < len(strips); i++ {
		wg.Go(func() { run(&strips[i]) })
	}
	run(&strips[0])
	wg.Wait()
}

// jpegStrip is one piece of a JPEG cut at restart markers.
type jpegStrip struct {
	data []byte // a whole JPEG of image rows [top, bottom)
	// top and bottom are the image rows the strip decodes; keep and end
	// the rows it is decoded for (the others are its margins).
	top, bottom, keep, end int
}

// minStripRows is the fewest MCU rows a strip keeps: below that, the two
// margin rows cost more than the strip saves.
const minStripRows = 4

// splitJPEG cuts data, a JPEG whose header is h, into at most n strips of
// about equal entropy-coded bytes, assembled in bufs' memory where it has
// room, and returns them in order with the MCU height, or nil when it
// cannot: n < 2, a progressive or arithmetic-coded JPEG, no restart
// markers, markers that do not start MCU rows often enough, or
// entropy-coded data that is not what the header says (the whole-image
// decoder then reports or tolerates it as it would anyway).
func splitJPEG(data []byte, h Header, n int, bufs [][]byte) (strips []jpegStrip, mcuH int) {
	if n < 2 {
		return nil, 0
	}
	f, ok := readFrame(data)
	if !ok || f.restart == 0 || f.width != h.Width || f.height != h.Height {
		return nil, 0
	}
	mcuW, mcuH := 8, 8
	if f.scanComps > 1 {
		mcuW, mcuH = 8*f.hmax, 8*f.vmax
	}
	perRow := (f.width + mcuW - 1) / mcuW
	rows := (f.height + mcuH - 1) / mcuH
	total := perRow * rows
	marks, end, ok := restartMarkers(data, f.scanEnd)
	if !ok || len(marks) != (total-1)/f.restart {
		return nil, 0
	}
	// start returns where MCU row r's data begins, or -1 when no marker
	// falls there.
	start := func(r int) int {
		if r == 0 {
			return f.scanEnd
		}
		if (r*perRow)%f.restart != 0 {
			return -1
		}
		return marks[r*perRow/f.restart-1] + 2
	}
	// finish returns where the data of the MCU rows before r ends.
	finish := func(r int) int {
		if r == rows {
			return end
		}
		return start(r) - 2
	}
	n = min(n, rows/minStripRows)
	cuts := []int{0}
	for i := 1; i < n; i++ {
		want := f.scanEnd + (end-f.scanEnd)*i/n
		best := -1
		for r := cuts[len(cuts)-1] + minStripRows; r <= rows-minStripRows; r++ {
			if start(r-1) < 0 || (r+1 < rows && start(r+1) < 0) {
				continue
			}
			if best < 0 || abs(start(r)-want) < abs(start(best)-want) {
				best = r
			}
		}
		if best < 0 {
			break
		}
		cuts = append(cuts, best)
	}
	if len(cuts) < 2 {
		return nil, 0
	}
	cuts = append(cuts, rows)
	for i := 0; i+1 < len(cuts); i++ {
		r0, r1 := cuts[i], cuts[i+1] // MCU rows kept
		d0, d1 := max(0, r0-1), min(rows, r1+1)
		s := jpegStrip{top: d0 * mcuH, bottom: min(f.height, d1*mcuH), keep: r0 * mcuH, end: min(f.height, r1*mcuH)}
		var buf []byte
		if i < len(bufs) {
			buf = bufs[i]
		}
		s.data = stripJPEG(buf, data, f, s.bottom-s.top, start(d0), finish(d1), d0*perRow/f.restart, marks)
		strips = append(strips, s)
	}
	return strips, mcuH
}

// stripJPEG assembles a strip in buf's memory, or new memory when buf is
// short: the header segments the decoder needs, the frame with height
// rows, the scan header, the entropy-coded data in data[from:to] with its
// restart markers (marks, all of the image's) renumbered for a strip that
// begins with interval first, and an end-of-image marker.
func stripJPEG(buf, data []byte, f frame, height, from, to, first int, marks []int) []byte {
	out := buf[:0]
	if n := f.headerLen + to - from + 2; cap(out) < n {
		out = make([]byte, 0, n+n/4)
	}
	out = append(out, 0xff, 0xd8)
	for _, seg := range f.segments {
		out = append(out, data[seg[0]:seg[1]]...)
	}
	binary.BigEndian.PutUint16(out[f.heightAt:], uint16(height))
	body := len(out) - from
	out = append(out, data[from:to]...)
	// The marker after interval j is RST(j mod 8); in the strip, j-first.
	for j := first; j < len(marks) && marks[j] < to; j++ {
		out[body+marks[j]+1] = 0xd0 + byte((j-first)&7)
	}
	return append(out, 0xff, 0xd9)
}

// frame is what splitJPEG reads from the segments before the scan.
type frame struct {
	width, height int
	hmax, vmax    int
	scanComps     int
	restart       int      // MCUs per restart interval; 0: none
	segments      [][2]int // [start, end) of each segment a strip keeps, markers included
	headerLen     int      // their total length, with SOI
	heightAt      int      // where the frame's height lies in a strip
	scanEnd       int      // where the entropy-coded data begins
}

// readFrame walks the segments of a baseline or extended sequential
// Huffman JPEG up to its first scan. It keeps the segments a decoder of a
// strip needs (tables, frame, restart interval, scan header, and APP0 and
// APP14, which say how colour is stored) and drops the rest (EXIF, ICC
// profiles, comments). ok is false for any other coding or for a header
// it cannot read.
func readFrame(data []byte) (f frame, ok bool) {
	f.headerLen = 2
	for pos := 2; ; {
		sg, what := readSegment(data, pos)
		if what != "" || sg.standalone {
			return f, false
		}
		pos = sg.next
		m, seg := sg.marker, sg.body
		keep := true
		switch {
		case m == 0xc0 || m == 0xc1:
			if len(seg) < 6 || f.width != 0 {
				return f, false
			}
			f.heightAt = f.headerLen + 5
			f.height = int(binary.BigEndian.Uint16(seg[1:]))
			f.width = int(binary.BigEndian.Uint16(seg[3:]))
			nc := int(seg[5])
			if len(seg) < 6+3*nc {
				return f, false
			}
			for c := 0; c < nc; c++ {
				hs, vs := int(seg[7+3*c]>>4), int(seg[7+3*c]&15)
				if hs < 1 || hs > 4 || vs < 1 || vs > 4 {
					return f, false
				}
				f.hmax, f.vmax = max(f.hmax, hs), max(f.vmax, vs)
			}
		case m >= 0xc2 && m <= 0xcf && m != 0xc4:
			return f, false // progressive, lossless, hierarchical, arithmetic
		case m == 0xdd:
			if len(seg) < 2 {
				return f, false
			}
			f.restart = int(binary.BigEndian.Uint16(seg))
		case m == 0xda:
			if f.width == 0 || len(seg) < 1 {
				return f, false
			}
			f.scanComps, f.scanEnd = int(seg[0]), sg.next
		case m >= 0xe1 && m <= 0xef && m != 0xee, m == 0xfe:
			keep = false
		}
		if keep {
			f.segments = append(f.segments, [2]int{sg.at, sg.next})
			f.headerLen += sg.next - sg.at
		}
		if m == 0xda {
			return f, true // the scan header, kept above, is the last segment
		}
	}
}

// restartMarkers returns the positions of the restart markers in the
// entropy-coded data from pos, and where the data ends (its end-of-image
// marker). ok is false when the data ends otherwise (another scan, or a
// truncated file) or when the markers are out of sequence.
func restartMarkers(data []byte, pos int) (marks []int, end int, ok bool) {
	for {
		i := bytes.IndexByte(data[pos:], 0xff)
		if i < 0 {
			return nil, 0, false
		}
		pos += i
		if pos+1 >= len(data) {
			return nil, 0, false
		}
		switch m := data[pos+1]; {
		case m == 0x00:
			pos += 2
		case m == 0xff:
			pos++
		case m >= 0xd0 && m <= 0xd7:
			if int(m-0xd0) != len(marks)&7 {
				return nil, 0, false
			}
			marks = append(marks, pos)
			pos += 2
		case m == 0xd9:
			return marks, pos, true
		default:
			return nil, 0, false
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
