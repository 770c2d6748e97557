#include "textflag.h"

// func skipBelowAVX2(row *float32, n int, conf float32) int
//
// Returns how many of the n floats (n a multiple of 32) at row come before
// the first block of 32 that holds one above conf (NaN is not above): n
// when none does. Each block is four compares (conf < v, ordered) whose
// masks are or-ed and tested once.
TEXT ·skipBelowAVX2(SB), NOSPLIT, $0-32
	MOVQ row+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS conf+16(FP), Y15
	XORQ AX, AX

loop:
	CMPQ AX, CX
	JGE done
	VCMPPS $0x11, (SI)(AX*4), Y15, Y0
	VCMPPS $0x11, 32(SI)(AX*4), Y15, Y1
	VCMPPS $0x11, 64(SI)(AX*4), Y15, Y2
	VCMPPS $0x11, 96(SI)(AX*4), Y15, Y3
	VORPS Y1, Y0, Y0
	VORPS Y3, Y2, Y2
	VORPS Y2, Y0, Y0
	VPTEST Y0, Y0
	JNZ done
	ADDQ $32, AX
	JMP loop

done:
	MOVQ AX, ret+24(FP)
	VZEROUPPER
	RET
