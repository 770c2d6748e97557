package decode

// orient applies an EXIF orientation to img the way OpenCV's
// ApplyExifOrientation does (flips and transposes), using img's scratch
// buffer for the result.
func orient(img *Image, o int) {
	if o <= 1 || o > 8 {
		return
	}
	w, h := img.Width, img.Height
	ow, oh := w, h
	if o >= 5 {
		ow, oh = h, w
	}
	dst := grow(img.scratch, ow*oh*3)
	src := img.Pix
	for y := 0; y < oh; y++ {
		row := dst[y*ow*3 : (y+1)*ow*3]
		for x := 0; x < ow; x++ {
			var sx, sy int
			switch o {
			case 2: // flip horizontally
				sx, sy = w-1-x, y
			case 3: // rotate 180
				sx, sy = w-1-x, h-1-y
			case 4: // flip vertically
				sx, sy = x, h-1-y
			case 5: // transpose
				sx, sy = y, x
			case 6: // transpose, flip horizontally: 90° clockwise
				sx, sy = y, h-1-x
			case 7: // flip both, transpose
				sx, sy = w-1-y, h-1-x
			case 8: // transpose, flip vertically: 90° counter-clockwise
				sx, sy = w-1-y, x
			}
			s := (sy*w + sx) * 3
			copy(row[x*3:x*3+3], src[s:s+3])
		}
	}
	img.scratch, img.Pix = img.Pix, dst
	img.Width, img.Height = ow, oh
}

// grow returns b resized to n bytes, reusing its storage when it can.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	return make([]byte, n)
}
