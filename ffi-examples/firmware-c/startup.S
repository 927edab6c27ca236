/* Cortex-M4F start-up for the C firmware: vector table, reset (FPU on, .data
   copied, .bss zeroed), main(), then semihosting exit with main's return value.
   Also embeds the golden file (GOLDEN_FILE, set by the Makefile) 64-byte aligned. */
    .syntax unified
    .cpu cortex-m4
    .fpu fpv4-sp-d16
    .thumb

    .section .vectors, "a"
    .align 2
    .global vectors
vectors:
    .word __stack_top
    .word Reset_Handler
    .rept 14
    .word Fault_Handler
    .endr

    .section .text.Reset_Handler, "ax"
    .global Reset_Handler
    .type Reset_Handler, %function
    .thumb_func
Reset_Handler:
    /* CPACR: full access to CP10/CP11 (the FPU) before any float instruction. */
    ldr r0, =0xE000ED88
    ldr r1, [r0]
    orr r1, r1, #(0xF << 20)
    str r1, [r0]
    dsb
    isb
    ldr r0, =__data_load
    ldr r1, =__data_start
    ldr r2, =__data_end
1:  cmp r1, r2
    bhs 2f
    ldr r3, [r0], #4
    str r3, [r1], #4
    b 1b
2:  ldr r1, =__bss_start
    ldr r2, =__bss_end
    movs r3, #0
3:  cmp r1, r2
    bhs 4f
    str r3, [r1], #4
    b 3b
4:  bl main
    bl sh_exit
5:  b 5b
    .size Reset_Handler, . - Reset_Handler

    .section .text.Fault_Handler, "ax"
    .type Fault_Handler, %function
    .thumb_func
Fault_Handler:
    bl fault
6:  b 6b
    .size Fault_Handler, . - Fault_Handler

    .section .rodata.golden, "a"
    .balign 64
    .global golden_start
golden_start:
    .incbin GOLDEN_FILE
    .global golden_end
golden_end:

    .section .note.GNU-stack, "", %progbits
