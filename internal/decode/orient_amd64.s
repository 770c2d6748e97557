#include "textflag.h"

// permIn spreads a column's 24 bytes (eight pixels) over the two lanes,
// twelve bytes to each; shufIn then gives each pixel a dword.
DATA permIn<>+0(SB)/4, $0
DATA permIn<>+4(SB)/4, $1
DATA permIn<>+8(SB)/4, $2
DATA permIn<>+12(SB)/4, $2
DATA permIn<>+16(SB)/4, $3
DATA permIn<>+20(SB)/4, $4
DATA permIn<>+24(SB)/4, $5
DATA permIn<>+28(SB)/4, $5
GLOBL permIn<>(SB), RODATA|NOPTR, $32

DATA shufIn<>+0(SB)/8, $0x8005040380020100
DATA shufIn<>+8(SB)/8, $0x800b0a0980080706
DATA shufIn<>+16(SB)/8, $0x8005040380020100
DATA shufIn<>+24(SB)/8, $0x800b0a0980080706
GLOBL shufIn<>(SB), RODATA|NOPTR, $32

// shufOut drops each dword's fourth byte, leaving twelve bytes at the
// bottom of each lane; permOut joins the lanes' twelve into 24.
DATA shufOut<>+0(SB)/8, $0x0908060504020100
DATA shufOut<>+8(SB)/8, $0x808080800e0d0c0a
DATA shufOut<>+16(SB)/8, $0x0908060504020100
DATA shufOut<>+24(SB)/8, $0x808080800e0d0c0a
GLOBL shufOut<>(SB), RODATA|NOPTR, $32

DATA permOut<>+0(SB)/4, $0
DATA permOut<>+4(SB)/4, $1
DATA permOut<>+8(SB)/4, $2
DATA permOut<>+12(SB)/4, $4
DATA permOut<>+16(SB)/4, $5
DATA permOut<>+20(SB)/4, $6
DATA permOut<>+24(SB)/4, $7
DATA permOut<>+28(SB)/4, $7
GLOBL permOut<>(SB), RODATA|NOPTR, $32

// OUT compacts the dwords of y into 24 bytes and stores 32 at addr.
#define OUT(y, addr) \
	VPSHUFB Y14, y, y; \
	VPERMD y, Y15, y; \
	VMOVDQU y, addr

// func transpose8AVX2(dst *byte, rowStep int, src *byte, step int, blocks int)
//
// Eight columns at a time: column j's eight pixels, the 24 bytes at
// src + j*step, become dwords of one register (a row of an 8x8 matrix),
// the matrix is transposed, and its row k, the eight columns' pixel k, is
// stored at dst + k*rowStep as 24 bytes (and eight more, which the next
// columns overwrite). Then dst moves 24 bytes on and src 8*step.
TEXT ·transpose8AVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ rowStep+8(FP), R8
	MOVQ src+16(FP), SI
	MOVQ step+24(FP), R9
	MOVQ blocks+32(FP), CX
	LEAQ (R8)(R8*2), R10 // 3*rowStep
	LEAQ (R9)(R9*2), R11 // 3*step
	MOVQ R9, R12
	SHLQ $3, R12         // 8*step
	VMOVDQU permIn<>(SB), Y12
	VMOVDQU shufIn<>(SB), Y13
	VMOVDQU shufOut<>(SB), Y14
	VMOVDQU permOut<>(SB), Y15

loop:
	LEAQ    (SI)(R9*4), BX
	VPERMD  (SI), Y12, Y0
	VPERMD  (SI)(R9*1), Y12, Y1
	VPERMD  (SI)(R9*2), Y12, Y2
	VPERMD  (SI)(R11*1), Y12, Y3
	VPERMD  (BX), Y12, Y4
	VPERMD  (BX)(R9*1), Y12, Y5
	VPERMD  (BX)(R9*2), Y12, Y6
	VPERMD  (BX)(R11*1), Y12, Y7
	VPSHUFB Y13, Y0, Y0
	VPSHUFB Y13, Y1, Y1
	VPSHUFB Y13, Y2, Y2
	VPSHUFB Y13, Y3, Y3
	VPSHUFB Y13, Y4, Y4
	VPSHUFB Y13, Y5, Y5
	VPSHUFB Y13, Y6, Y6
	VPSHUFB Y13, Y7, Y7

	// Rows a0-a7 (columns) to columns (pixels k): pairs of dwords,
	// then of qwords, then of lanes.
	VPUNPCKHDQ  Y1, Y0, Y8
	VPUNPCKLDQ  Y1, Y0, Y0
	VPUNPCKHDQ  Y3, Y2, Y9
	VPUNPCKLDQ  Y3, Y2, Y2
	VPUNPCKHDQ  Y5, Y4, Y10
	VPUNPCKLDQ  Y5, Y4, Y4
	VPUNPCKHDQ  Y7, Y6, Y11
	VPUNPCKLDQ  Y7, Y6, Y6
	VPUNPCKHQDQ Y2, Y0, Y1
	VPUNPCKLQDQ Y2, Y0, Y0
	VPUNPCKHQDQ Y9, Y8, Y3
	VPUNPCKLQDQ Y9, Y8, Y8
	VPUNPCKHQDQ Y6, Y4, Y5
	VPUNPCKLQDQ Y6, Y4, Y4
	VPUNPCKHQDQ Y11, Y10, Y7
	VPUNPCKLQDQ Y11, Y10, Y10
	VPERM2I128  $0x31, Y4, Y0, Y2
	VPERM2I128  $0x20, Y4, Y0, Y0
	VPERM2I128  $0x31, Y5, Y1, Y6
	VPERM2I128  $0x20, Y5, Y1, Y1
	VPERM2I128  $0x31, Y10, Y8, Y9
	VPERM2I128  $0x20, Y10, Y8, Y8
	VPERM2I128  $0x31, Y7, Y3, Y11
	VPERM2I128  $0x20, Y7, Y3, Y3

	// Pixel k of the eight columns is in Y0, Y1, Y8, Y3, Y2, Y6, Y9, Y11.
	LEAQ (DI)(R8*4), DX
	OUT(Y0, (DI))
	OUT(Y1, (DI)(R8*1))
	OUT(Y8, (DI)(R8*2))
	OUT(Y3, (DI)(R10*1))
	OUT(Y2, (DX))
	OUT(Y6, (DX)(R8*1))
	OUT(Y9, (DX)(R8*2))
	OUT(Y11, (DX)(R10*1))

	ADDQ $24, DI
	ADDQ R12, SI
	DECQ CX
	JNZ  loop
	VZEROUPPER
	RET
