#include "textflag.h"

// func hrowAVX2(src *byte, xo0, a0, a1, rout, gout, bout *int32, n int)
//
// For each of the n columns x (n a multiple of 8), with o = xo0[x]:
// r[x] = src[o]*a0[x] + src[o+3]*a1[x], and g, b from src[o+1], src[o+4]
// and src[o+2], src[o+5]. Eight columns at a time: the dwords at o and
// o+3 are gathered and their low three bytes split.
TEXT ·hrowAVX2(SB), NOSPLIT, $0-64
	MOVQ src+0(FP), SI
	MOVQ xo0+8(FP), DI
	MOVQ a0+16(FP), R8
	MOVQ a1+24(FP), R9
	MOVQ rout+32(FP), R10
	MOVQ gout+40(FP), R11
	MOVQ bout+48(FP), R12
	MOVQ n+56(FP), CX
	XORQ AX, AX
	VPCMPEQD Y15, Y15, Y15
	VPSRLD $24, Y15, Y14 // 0xff in each lane
	TESTQ CX, CX
	JZ done

loop:
	VMOVDQU (DI)(AX*1), Y0
	VMOVDQA Y15, Y1
	VPGATHERDD Y1, (SI)(Y0*1), Y2 // bytes o..o+3
	VMOVDQA Y15, Y1
	VPGATHERDD Y1, 3(SI)(Y0*1), Y3 // bytes o+3..o+6
	VMOVDQU (R8)(AX*1), Y4
	VMOVDQU (R9)(AX*1), Y5

	VPAND Y14, Y2, Y6
	VPAND Y14, Y3, Y7
	VPMULLD Y4, Y6, Y6
	VPMULLD Y5, Y7, Y7
	VPADDD Y7, Y6, Y6
	VMOVDQU Y6, (R10)(AX*1)

	VPSRLD $8, Y2, Y6
	VPSRLD $8, Y3, Y7
	VPAND Y14, Y6, Y6
	VPAND Y14, Y7, Y7
	VPMULLD Y4, Y6, Y6
	VPMULLD Y5, Y7, Y7
	VPADDD Y7, Y6, Y6
	VMOVDQU Y6, (R11)(AX*1)

	VPSRLD $16, Y2, Y6
	VPSRLD $16, Y3, Y7
	VPAND Y14, Y6, Y6
	VPAND Y14, Y7, Y7
	VPMULLD Y4, Y6, Y6
	VPMULLD Y5, Y7, Y7
	VPADDD Y7, Y6, Y6
	VMOVDQU Y6, (R12)(AX*1)

	ADDQ $32, AX
	SUBQ $8, CX
	JNZ loop

done:
	VZEROUPPER
	RET

// func blendAVX2(out *float32, asrc, bsrc *int32, n int, b0, b1 int32)
//
// For each of the n values (n a multiple of 8):
// out[x] = float32(((b0*(a[x]>>4))>>16 + (b1*(b[x]>>4))>>16 + 2) >> 2) / 255.
TEXT ·blendAVX2(SB), NOSPLIT, $0-40
	MOVQ out+0(FP), DX
	MOVQ asrc+8(FP), SI
	MOVQ bsrc+16(FP), DI
	MOVQ n+24(FP), CX
	MOVL b0+32(FP), AX
	MOVL AX, X8
	VPBROADCASTD X8, Y8
	MOVL b1+36(FP), AX
	MOVL AX, X9
	VPBROADCASTD X9, Y9
	MOVL $2, AX
	MOVL AX, X10
	VPBROADCASTD X10, Y10
	MOVL $0x437f0000, AX // 255.0
	MOVL AX, X11
	VPBROADCASTD X11, Y11
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
	VMOVUPS Y0, (DX)(AX*1)
	ADDQ $32, AX
	SUBQ $8, CX
	JNZ bloop

bdone:
	VZEROUPPER
	RET
