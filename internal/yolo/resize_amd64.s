#include "textflag.h"

// SPLATL sets every dword lane of y to the 32-bit src, through AX
// and x (y's low half). The move into x is the VEX-encoded VMOVD: a
// legacy SSE MOVD after an AVX instruction has dirtied the upper halves
// stalls on Intel cores (the SSE/AVX transition), and four of them made
// each blendAVX2 call of 60 blocks take four times as long on the Xeon of
// 4 December.
#define SPLATL(src, x, y) \
	MOVL src, AX; \
	VMOVD AX, x; \
	VPBROADCASTD x, y

// GATHERPAIR gathers, for the eight byte offsets in Y0, the dwords at
// base plus each offset into lo and those three bytes further into hi.
// A gather clears its mask (Y1), so each one is given a fresh copy of
// Y15's all-ones.
#define GATHERPAIR(base, lo, hi) \
	VMOVDQA Y15, Y1; \
	VPGATHERDD Y1, (base)(Y0*1), lo; \
	VMOVDQA Y15, Y1; \
	VPGATHERDD Y1, 3(base)(Y0*1), hi

// UNITCONSTS sets the registers that NORM and the byte masks read: Y15
// all ones (also the gathers' mask), Y14 0xff in each lane, Y12 255.0.
#define UNITCONSTS \
	VPCMPEQD Y15, Y15, Y15; \
	VPSRLD $24, Y15, Y14; \
	SPLATL($0x437f0000, X12, Y12)

// NORM stores at addr the eight dwords of v, values 0–255, as float32
// divided by 255 (Y12: 255.0), as im.float() / 255 computes them.
#define NORM(v, addr) \
	VCVTDQ2PS v, v; \
	VDIVPS Y12, v, v; \
	VMOVUPS v, addr

// TAPS stores at out(AX*1), for the eight lanes, lsrc's byte 0 times
// Y4's low word plus rsrc's byte 2 times Y4's high word: the lane's low
// word is taken from lsrc and its high word from rsrc, both masked to
// their low byte by Y13 (0x00ff00ff), and one VPMADDWD multiplies the two
// words by the taps' weights and sums them, exactly, as the bytes and
// the weights fit a signed word and the sum a dword. The caller shifts
// the left and right taps' dwords so that the plane's bytes sit there.
// Two VPMULLD per plane took twice as long on Intel cores, where each is
// two slow micro-ops.
#define TAPS(lsrc, rsrc, out) \
	VPBLENDW $0xaa, rsrc, lsrc, Y6; \
	VPAND Y13, Y6, Y6; \
	VPMADDWD Y4, Y6, Y6; \
	VMOVDQU Y6, (out)(AX*1)

// func hrowAVX2(src *byte, xo0 *int32, perm *byte, a0, a1, rout, gout, bout *int32, n, permuted int)
//
// For each of the n columns x (n a multiple of 8), with o = xo0[x]:
// r[x] = src[o]*a0[x] + src[o+3]*a1[x], and g, b from src[o+1], src[o+4]
// and src[o+2], src[o+5]. Eight columns at a time: the dwords at o and
// o+3 are gathered and their low three bytes split. In the first permuted
// columns (a multiple of 8; none without AVX-512 VBMI) each block's dwords
// are instead its 64 bytes from o permuted by its 64 bytes of perm: the
// left taps' in the low half, the right taps' in the high half.
TEXT ·hrowAVX2(SB), NOSPLIT, $0-80
	MOVQ src+0(FP), SI
	MOVQ xo0+8(FP), DI
	MOVQ perm+16(FP), R13
	MOVQ a0+24(FP), R8
	MOVQ a1+32(FP), R9
	MOVQ rout+40(FP), R10
	MOVQ gout+48(FP), R11
	MOVQ bout+56(FP), R12
	MOVQ n+64(FP), CX
	MOVQ permuted+72(FP), BX
	SHLQ $2, BX // the byte offset in xo0 where the gathers begin
	XORQ AX, AX
	VPCMPEQD Y15, Y15, Y15
	VPSRLW $8, Y15, Y13 // 0x00ff00ff in each lane
	TESTQ CX, CX
	JZ done

loop:
	CMPQ AX, BX
	JGE gather
	MOVLQSX (DI)(AX*1), DX    // the block's first tap
	VMOVDQU64 (R13)(AX*2), Z1 // its 64 bytes of perm
	VPERMB (SI)(DX*1), Z1, Z2
	VEXTRACTI64X4 $1, Z2, Y3
	JMP taps

gather:
	VMOVDQU (DI)(AX*1), Y0
	GATHERPAIR(SI, Y2, Y3) // bytes o..o+3 and o+3..o+6

taps:
	VMOVDQU (R8)(AX*1), Y4
	VMOVDQU (R9)(AX*1), Y5
	VPSLLD $16, Y5, Y5
	VPBLENDW $0xaa, Y5, Y4, Y4 // a0 in the low words, a1 in the high

	VPSLLD $16, Y3, Y7
	TAPS(Y2, Y7, R10) // the taps' bytes 0
	VPSRLD $8, Y2, Y6
	VPSLLD $8, Y3, Y7
	TAPS(Y6, Y7, R11) // bytes 1
	VPSRLD $16, Y2, Y6
	TAPS(Y6, Y3, R12) // bytes 2

	ADDQ $32, AX
	SUBQ $8, CX
	JNZ loop

done:
	VZEROUPPER
	RET

// func blendAVX2(out *float32, asrc, bsrc *int32, n int, b0, b1 int32, stream int)
//
// For each of the n values (n a multiple of 8):
// out[x] = float32(((b0*(a[x]>>4))>>16 + (b1*(b[x]>>4))>>16 + 2) >> 2) / 255.
// With stream not 0, out is 32-byte aligned and written with
// non-temporal stores, which the caller orders with sfence.
TEXT ·blendAVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DX
	MOVQ asrc+8(FP), SI
	MOVQ bsrc+16(FP), DI
	MOVQ n+24(FP), CX
	MOVQ stream+40(FP), R8
	SPLATL(b0+32(FP), X8, Y8)
	SPLATL(b1+36(FP), X9, Y9)
	SPLATL($2, X10, Y10)
	SPLATL($0x437f0000, X11, Y11) // 255.0
	XORQ AX, AX
	TESTQ CX, CX
	JZ bdone

bloop:
	VMOVDQU (SI)(AX*1), Y0
	VMOVDQU (DI)(AX*1), Y1
	VPSRAD $4, Y0, Y0
	VPSRAD $4, Y1, Y1
	VPMULLD Y8, Y0, Y0
	VPMULLD Y9, Y1, Y1
	VPSRAD $16, Y0, Y0
	VPSRAD $16, Y1, Y1
	VPADDD Y1, Y0, Y0
	VPADDD Y10, Y0, Y0
	VPSRAD $2, Y0, Y0
	VCVTDQ2PS Y0, Y0
	VDIVPS Y11, Y0, Y0
	TESTQ R8, R8
	JNZ bstream
	VMOVUPS Y0, (DX)(AX*1)
	JMP bnext

bstream:
	VMOVNTPS Y0, (DX)(AX*1)

bnext:
	ADDQ $32, AX
	SUBQ $8, CX
	JNZ bloop

bdone:
	VZEROUPPER
	RET

// The byte offsets of eight output pixels' left source pixels in an exact
// 2× reduction: two pixels of three bytes each.
DATA area2idx<>+0(SB)/4, $0
DATA area2idx<>+4(SB)/4, $6
DATA area2idx<>+8(SB)/4, $12
DATA area2idx<>+12(SB)/4, $18
DATA area2idx<>+16(SB)/4, $24
DATA area2idx<>+20(SB)/4, $30
DATA area2idx<>+24(SB)/4, $36
DATA area2idx<>+28(SB)/4, $42
GLOBL area2idx<>(SB), RODATA|NOPTR, $32

// MEAN4 stores at out, for the eight lanes, the rounded mean of the low
// bytes of Y2–Y5 divided by 255 (Y12: 255.0, Y13: 2, Y14: 0xff).
#define MEAN4(out) \
	VPAND Y14, Y2, Y6; \
	VPAND Y14, Y3, Y7; \
	VPADDD Y7, Y6, Y6; \
	VPAND Y14, Y4, Y7; \
	VPADDD Y7, Y6, Y6; \
	VPAND Y14, Y5, Y7; \
	VPADDD Y7, Y6, Y6; \
	VPADDD Y13, Y6, Y6; \
	VPSRLD $2, Y6, Y6; \
	NORM(Y6, (out))

// NEXTBYTE moves the next channel's bytes of Y2–Y5 to the low bytes.
#define NEXTBYTE \
	VPSRLD $8, Y2, Y2; \
	VPSRLD $8, Y3, Y3; \
	VPSRLD $8, Y4, Y4; \
	VPSRLD $8, Y5, Y5

// func area2AVX2(row0, row1, perm *byte, rout, gout, bout *float32, n, permuted int)
//
// For each of the n output pixels x (n a multiple of 8), each channel c:
// the rounded mean of row0[6x+c], row0[6x+3+c], row1[6x+c], row1[6x+3+c],
// divided by 255. The dwords at 6x and 6x+3 of both rows are gathered and
// their low three bytes split. In the first permuted pixels (a multiple of
// 8; none without AVX-512 VBMI) each row's dwords are instead its 64 bytes
// from 6x permuted by the 64 bytes at perm.
TEXT ·area2AVX2(SB), NOSPLIT, $0-64
	MOVQ row0+0(FP), SI
	MOVQ row1+8(FP), DI
	MOVQ perm+16(FP), R13
	MOVQ rout+24(FP), R10
	MOVQ gout+32(FP), R11
	MOVQ bout+40(FP), R12
	MOVQ n+48(FP), CX
	MOVQ permuted+56(FP), BX
	VMOVDQU area2idx<>(SB), Y0
	UNITCONSTS
	SPLATL($2, X13, Y13)
	TESTQ CX, CX
	JZ adone
	TESTQ BX, BX
	JZ aloop
	VMOVDQU64 (R13), Z9

aloop:
	TESTQ BX, BX
	JZ agather
	VPERMB (SI), Z9, Z2
	VEXTRACTI64X4 $1, Z2, Y3
	VPERMB (DI), Z9, Z4
	VEXTRACTI64X4 $1, Z4, Y5
	SUBQ $8, BX
	JMP ameans

agather:
	GATHERPAIR(SI, Y2, Y3)
	GATHERPAIR(DI, Y4, Y5)

ameans:
	MEAN4(R10)
	NEXTBYTE
	MEAN4(R11)
	NEXTBYTE
	MEAN4(R12)

	ADDQ $48, SI
	ADDQ $48, DI
	ADDQ $32, R10
	ADDQ $32, R11
	ADDQ $32, R12
	SUBQ $8, CX
	JNZ aloop

adone:
	VZEROUPPER
	RET

// func sfence()
TEXT ·sfence(SB), NOSPLIT, $0-0
	SFENCE
	RET

// The byte offsets of eight pixels of an interleaved RGB row.
DATA rgbidx<>+0(SB)/4, $0
DATA rgbidx<>+4(SB)/4, $3
DATA rgbidx<>+8(SB)/4, $6
DATA rgbidx<>+12(SB)/4, $9
DATA rgbidx<>+16(SB)/4, $12
DATA rgbidx<>+20(SB)/4, $15
DATA rgbidx<>+24(SB)/4, $18
DATA rgbidx<>+28(SB)/4, $21
GLOBL rgbidx<>(SB), RODATA|NOPTR, $32

// PLANE stores at out(AX*1) the eight lanes' low bytes of Y3 divided
// by 255 (Y14: 0xff, Y12: 255.0).
#define PLANE(out) \
	VPAND Y14, Y3, Y3; \
	NORM(Y3, (out)(AX*1))

// func storeAVX2(src *byte, rout, gout, bout *float32, n int)
//
// For each of the n pixels x (n a multiple of 8) of an interleaved RGB
// row: r[x] = src[3x]/255, g[x] = src[3x+1]/255, b[x] = src[3x+2]/255.
// Eight pixels at a time, the dwords at 3x are gathered and their low
// three bytes split; the last one read ends at byte 3n.
TEXT ·storeAVX2(SB), NOSPLIT, $0-40
	MOVQ src+0(FP), SI
	MOVQ rout+8(FP), R10
	MOVQ gout+16(FP), R11
	MOVQ bout+24(FP), R12
	MOVQ n+32(FP), CX
	VMOVDQU rgbidx<>(SB), Y0
	UNITCONSTS
	XORQ AX, AX
	TESTQ CX, CX
	JZ sdone

sloop:
	VMOVDQA Y15, Y1
	VPGATHERDD Y1, (SI)(Y0*1), Y2
	VMOVDQA Y2, Y3
	PLANE(R10)
	VPSRLD $8, Y2, Y3
	PLANE(R11)
	VPSRLD $16, Y2, Y3
	PLANE(R12)
	ADDQ $24, SI
	ADDQ $32, AX
	SUBQ $8, CX
	JNZ sloop

sdone:
	VZEROUPPER
	RET
