/// A distinct interest (one parameter binding) of a channel, as numbered by its `ChannelIndex`.
///
/// Ids are dense and reused: after an interest is released, a later `acquire` may hand out
/// the same id for different parameters. Holders must drop an id once it is released.
public struct InterestID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) {
        self.rawValue = rawValue
    }

    public static func < (lhs: InterestID, rhs: InterestID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "interest#\(rawValue)" }
}
