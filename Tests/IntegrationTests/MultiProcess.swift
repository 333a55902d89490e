import Testing

/// The suites that run networks of real processes (brokers, controllers, PostgreSQL servers,
/// network namespaces), hundreds of clients and load: they run one at a time, beside the rest
/// of the suite, so that on a machine of two cores each gets the CPU its deadlines assume.
/// Each is an extension's nested suite (`extension MultiProcess { struct NetworkTests … }`);
/// `.serialized` applies to nested suites too.
@Suite(.serialized)
enum MultiProcess {}
