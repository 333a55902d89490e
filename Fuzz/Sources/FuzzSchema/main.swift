import FuzzerDriver

// Hand the command line to libFuzzer, which calls `fuzzSchema` with each input.
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
let status = LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzSchema(data!, size) }
fatalError("libFuzzer returned \(status)")
