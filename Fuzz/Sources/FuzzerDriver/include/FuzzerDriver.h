// libFuzzer's entry point for programs that have a main of their own (LLVM >= 11).
// SwiftPM links every executable target's main as `<Module>_main`, so the fuzz targets keep a
// main.swift that hands control to libFuzzer through this, instead of using libFuzzer's main.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
