// Only the header matters: libFuzzer (linked by -sanitize=fuzzer) defines LLVMFuzzerRunDriver.
