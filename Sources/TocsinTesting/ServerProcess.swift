import TocsinDev

/// A real `tocsin` process, for tests that kill it with SIGKILL: the same launcher `tocsin dev`
/// and the benchmarks use.
public typealias ServerProcess = ChildProcess
