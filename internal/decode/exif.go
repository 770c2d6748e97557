package decode

import "encoding/binary"

// exifOrientation returns the orientation tag (1–8) of a TIFF-structured
// EXIF block, or 0 when there is none or the block is malformed.
func exifOrientation(tiff []byte) int {
	if len(tiff) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(tiff[:4]) {
	case "II*\x00":
		bo = binary.LittleEndian
	case "MM\x00*":
		bo = binary.BigEndian
	default:
		return 0
	}
	ifd := int64(bo.Uint32(tiff[4:]))
	if ifd < 8 || ifd+2 > int64(len(tiff)) {
		return 0
	}
	n := int64(bo.Uint16(tiff[ifd:]))
	for i := int64(0); i < n; i++ {
		e := ifd + 2 + 12*i
		if e+12 > int64(len(tiff)) {
			return 0
		}
		if bo.Uint16(tiff[e:]) != 0x0112 {
			continue
		}
		typ, count := bo.Uint16(tiff[e+2:]), bo.Uint32(tiff[e+4:])
		if typ != 3 || count < 1 { // SHORT
			return 0
		}
		if o := int(bo.Uint16(tiff[e+8:])); o >= 1 && o <= 8 {
			return o
		}
		return 0
	}
	return 0
}
